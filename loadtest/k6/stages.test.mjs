// node --test loadtest/k6/stages.test.mjs
import assert from "node:assert/strict";
import test from "node:test";

import { duration, iterationRate, k6Scenarios } from "./stages.js";

// Shape of `kafscale-loadtest --scenario ... --print-scenario`.
const summary = {
  name: "t",
  total_secs: 25,
  total_records: 0,
  stages: [
    { name: "up", kind: "ramp", start_rate: 0, rate: 2000, start_secs: 0, end_secs: 10, records: 10000, producers: 2, consumers: 2 },
    { name: "hold", kind: "steady", start_rate: 2000, rate: 2000, start_secs: 10, end_secs: 20, records: 20000, producers: 2, consumers: 0 },
    { name: "burst", kind: "spike", start_rate: 6000, rate: 6000, start_secs: 20, end_secs: 25.5, records: 33000, producers: 4, consumers: 3 },
  ],
};

test("stages map to one produce and at most one consume scenario each", () => {
  const s = k6Scenarios(summary, 10);
  assert.deepEqual(Object.keys(s), ["produce_1", "consume_1", "produce_2", "produce_3", "consume_3"]);
  assert.equal(s.produce_1.startRate, 0);
  assert.deepEqual(s.produce_1.stages, [{ target: 200, duration: "10000ms" }]);
  assert.equal(s.produce_2.startTime, "10000ms");
  assert.equal(s.produce_3.startRate, 600);
  assert.deepEqual(s.produce_3.stages, [{ target: 600, duration: "5500ms" }]);
  assert.equal(s.produce_3.maxVUs, 4);
  assert.equal(s.consume_3.vus, 3);
  assert.equal(s.consume_3.duration, "5500ms");
});

test("bad input is refused with a message", () => {
  assert.throws(() => k6Scenarios({ stages: [] }, 10), /non-empty/);
  assert.throws(() => k6Scenarios({ stages: [{ ...summary.stages[0], rate: "x" }] }, 10), /stage 1: `rate`/);
  assert.throws(() => k6Scenarios(summary, 0), /batch/);
});

test("helpers", () => {
  assert.equal(duration(1.25), "1250ms");
  assert.equal(iterationRate(2005, 10), 201);
});
