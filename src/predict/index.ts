/** `freesh/predict`: output-length predictors — the trained model and the heuristic that never fails. */
export { capped, heuristicPredictor, type HeuristicPredictorOptions, type Predictor } from './predictor.js';
export { type BiasCalibration, type CalibrationKind, MeanBias, MedianBias } from './calibration.js';
export { type FineTuneResult, ModelPredictor, type ModelPredictorOptions } from './model-predictor.js';
