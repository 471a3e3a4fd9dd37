/** `freesh/carbon`: grid carbon intensity signals — constants, Electricity Maps, WattTime, CSV series. */
export { CachedCarbonSignal, type CachedSignalOptions, electricityMapsSource, type IntensitySource, wattTimeSource } from './providers.js';
export { type CarbonSeries, constantSeries, parseElectricityMapsCsv, parseFreeshCarbonCsv, stepSeries } from './series.js';
export { type CarbonSignal, seriesSignal } from './signal.js';
export { carbonSignalFromConfig } from './from-config.js';
