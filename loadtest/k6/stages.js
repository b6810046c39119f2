// Maps a kafscale-loadtest scenario (the JSON printed by
// `kafscale-loadtest --scenario FILE --print-scenario`) to k6 scenarios.
//
// Every stage becomes two k6 scenarios that start at the stage's start time:
//   - `produce_<n>`: a ramping-arrival-rate executor with exactly the stage's
//     producers as VUs. Its rate moves linearly from the stage's start rate
//     to its end rate, as kafscale-loadtest's ramp does; steady and spike
//     stages start at their rate. One iteration produces `batch` records, so
//     the iteration rate is the record rate divided by `batch`.
//   - `consume_<n>`: a constant-vus executor with the stage's consumers
//     (left out when the stage has none).
//
// Plain ES module without k6 imports, so that node can check it too.

/** Seconds as a k6 duration string. */
export function duration(secs) {
  return `${Math.round(secs * 1000)}ms`;
}

/** Iterations per second for `rate` records/s at `batch` records each. */
export function iterationRate(rate, batch) {
  return Math.round(rate / batch);
}

/** Checks the fields the mapping reads; throws a readable error otherwise. */
export function checkSummary(summary) {
  if (!summary || !Array.isArray(summary.stages) || summary.stages.length === 0) {
    throw new Error("scenario JSON needs a non-empty `stages` array (use --print-scenario)");
  }
  summary.stages.forEach((s, i) => {
    for (const field of ["start_rate", "rate", "start_secs", "end_secs", "producers", "consumers"]) {
      if (typeof s[field] !== "number") {
        throw new Error(`stage ${i + 1}: \`${field}\` must be a number`);
      }
    }
  });
  return summary;
}

/** The k6 `scenarios` option for a scenario summary. */
export function k6Scenarios(summary, batch) {
  checkSummary(summary);
  if (!(batch >= 1)) {
    throw new Error(`batch must be >= 1, got ${batch}`);
  }
  const scenarios = {};
  summary.stages.forEach((stage, i) => {
    const n = i + 1;
    const secs = stage.end_secs - stage.start_secs;
    scenarios[`produce_${n}`] = {
      executor: "ramping-arrival-rate",
      exec: "produce",
      startTime: duration(stage.start_secs),
      timeUnit: "1s",
      startRate: iterationRate(stage.start_rate, batch),
      stages: [{ target: iterationRate(stage.rate, batch), duration: duration(secs) }],
      preAllocatedVUs: stage.producers,
      maxVUs: stage.producers,
      tags: { stage: stage.name, kind: stage.kind },
    };
    if (stage.consumers > 0) {
      scenarios[`consume_${n}`] = {
        executor: "constant-vus",
        exec: "consume",
        startTime: duration(stage.start_secs),
        vus: stage.consumers,
        duration: duration(secs),
        gracefulStop: "2s",
        tags: { stage: stage.name, kind: stage.kind },
      };
    }
  });
  return scenarios;
}
