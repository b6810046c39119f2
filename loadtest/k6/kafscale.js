// k6 + xk6-kafka script that drives a kafscale-loadtest scenario.
//
//   kafscale-loadtest --scenario ../scenarios/ramp-steady-spike.yaml --print-scenario > scenario.json
//   ./k6 run -e SCENARIO=scenario.json -e BROKERS=127.0.0.1:9092 kafscale.js
//
// Environment: SCENARIO (required), BROKERS (default 127.0.0.1:9092), TOPIC
// (default k6-loadtest), PARTITIONS (default 12, used when creating the
// topic), RECORD_SIZE (bytes, default 1024), BATCH (records per produce
// call, default 10), GROUP (consumer group, default k6-loadtest-<topic>).
// See README.md for what this measures and what it does not.

import { check } from "k6";
import exec from "k6/execution";
import { Connection, Reader, SchemaRegistry, SCHEMA_TYPE_STRING, Writer } from "k6/x/kafka";

import { checkSummary, k6Scenarios } from "./stages.js";

const brokers = (__ENV.BROKERS || "127.0.0.1:9092").split(",");
const topic = __ENV.TOPIC || "k6-loadtest";
const partitions = parseInt(__ENV.PARTITIONS || "12", 10);
const recordSize = parseInt(__ENV.RECORD_SIZE || "1024", 10);
const batch = parseInt(__ENV.BATCH || "10", 10);
const groupID = __ENV.GROUP || `k6-loadtest-${topic}`;

if (!__ENV.SCENARIO) {
  throw new Error("set SCENARIO to the JSON of `kafscale-loadtest --scenario FILE --print-scenario`");
}
const summary = checkSummary(JSON.parse(open(__ENV.SCENARIO)));

export const options = {
  scenarios: k6Scenarios(summary, batch),
  // Stage tags let the summary and outputs split figures per stage.
  systemTags: ["scenario", "check", "error"],
};

const writer = new Writer({ brokers, topic, autoCreateTopic: false });
const registry = new SchemaRegistry();
const filler = "x".repeat(Math.max(recordSize, 1));

// Created on a consumer VU's first iteration: a Reader made in the init
// context would join the group on every VU, producers included, and hold
// partitions that nobody reads.
let reader = null;

export function setup() {
  const connection = new Connection({ address: brokers[0] });
  if (!connection.listTopics().includes(topic)) {
    connection.createTopic({ topic, numPartitions: partitions, replicationFactor: 1 });
  }
  connection.close();
}

export function produce() {
  const messages = [];
  for (let i = 0; i < batch; i++) {
    messages.push({
      key: registry.serialize({ data: `${exec.vu.idInTest}-${exec.scenario.iterationInTest}-${i}`, schemaType: SCHEMA_TYPE_STRING }),
      value: registry.serialize({ data: filler, schemaType: SCHEMA_TYPE_STRING }),
    });
  }
  writer.produce({ messages });
}

/** Milliseconds left in the running consume stage. */
function stageLeftMs() {
  const n = exec.scenario.name.replace("consume_", "");
  const stage = summary.stages[parseInt(n, 10) - 1];
  const elapsed = Date.now() - exec.scenario.startTime;
  return (stage.end_secs - stage.start_secs) * 1000 - elapsed;
}

export function consume() {
  if (reader === null) {
    reader = new Reader({ brokers, groupID, groupTopics: [topic], maxWait: "500ms" });
  }
  const messages = reader.consume({ limit: batch });
  check(messages, { "consumed a batch": (m) => m.length === batch });
  // Leave the group before the stage ends, so that a later stage with fewer
  // consumers does not keep idle members that hold partitions.
  if (stageLeftMs() < 1500) {
    reader.close();
    reader = null;
  }
}

export function teardown() {
  writer.close();
}
