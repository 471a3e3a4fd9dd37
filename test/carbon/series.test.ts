import { describe, expect, it } from 'vitest';
import { constantSeries, parseElectricityMapsCsv, parseFreeshCarbonCsv, stepSeries } from '../../src/carbon/series.js';

const EM = `Datetime (UTC),Country,Zone Name,Zone Id,Carbon Intensity gCO₂eq/kWh (direct),Carbon Intensity gCO₂eq/kWh (LCA),Low Carbon Percentage
2023-01-01 00:00:00,Germany,Germany,DE,150,200,80
2023-01-01 01:00:00,Germany,Germany,DE,160,210,80
2023-01-01 02:00:00,Germany,Germany,DE,170,220,80
`;

describe('carbon series', () => {
  it('steps through values and repeats past the end', () => {
    const s = stepSeries([1, 2, 3], 10);
    expect([0, 9, 10, 25, 30, 31].map((t) => s.at(t))).toEqual([1, 1, 2, 3, 1, 1]);
    expect(constantSeries(42).at(1e12)).toBe(42);
  });

  it('reads an Electricity Maps export, life-cycle or direct, from a chosen hour', () => {
    expect(parseElectricityMapsCsv(EM).values).toEqual([200, 210, 220]);
    expect(parseElectricityMapsCsv(EM, { basis: 'direct' }).values).toEqual([150, 160, 170]);
    const fromOne = parseElectricityMapsCsv(EM, { start: '2023-01-01T01:00Z' });
    expect(fromOne.at(0)).toBe(210);
    expect(fromOne.at(3_600_000)).toBe(220);
    expect(fromOne.at(2 * 3_600_000)).toBe(200);
  });

  it('explains a file that is not an export, or a bad value', () => {
    expect(() => parseElectricityMapsCsv('a,b\n1,2')).toThrow(/not an Electricity Maps export/);
    expect(() => parseElectricityMapsCsv(EM.replace('210', 'n/a'))).toThrow(/row 3/);
    expect(() => parseElectricityMapsCsv(EM, { start: '2030-01-01T00:00Z' })).toThrow(/after the series ends/);
  });

  it('reads the FREESH 3-site series, clamping negative rates to 0', () => {
    const [a, b, c] = parseFreeshCarbonCsv('Data center A, Data center B,location 3\n10,-5,30\n11,21,31\n');
    expect(a!.values).toEqual([10, 11]);
    expect(b!.values).toEqual([0, 21]);
    expect(c!.at(300_000)).toBe(31);
    expect(parseFreeshCarbonCsv('x,y\n1,2\n3,4\n', { startStep: 1 })[0]!.at(0)).toBe(3);
  });
});
