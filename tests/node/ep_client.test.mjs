// A Node.js client of the ExecutionPlanner: the proof that a client generated
// in another language works. It loads protos/ directly with
// @grpc/proto-loader (google/protobuf/struct.proto comes from the well-known
// types protobufjs ships) and calls Ask and GetServiceInfo on a real server.
//
// Run: `node --test tests/node/` (from the repo root, after `make install`).
//
// By default the test starts `ep-server serve --listen 127.0.0.1:0` itself
// (the binary in the repo's .venv, or $EP_SERVER), reads the port from its
// start-up log line, and at the end stops it with SIGTERM and checks that it
// exits 0. With EP_TEST_TARGET=HOST:PORT it asks that server instead and
// skips the start and stop. Every wait is bounded by a timeout.

import { spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, "..", "..");
const PROTOS = path.join(ROOT, "protos");
const EP_SERVER = process.env.EP_SERVER || path.join(ROOT, ".venv", "bin", "ep-server");
const TARGET = process.env.EP_TEST_TARGET || "";

const START_TIMEOUT_MS = 30_000; // server start-up, plugins included
const CALL_TIMEOUT_MS = 10_000; // one RPC, connection included
const STOP_TIMEOUT_MS = 20_000; // graceful stop (default grace period: 10 s)

const SEED = { tasktype: "uri://docker-container", taskinfo: { image: "docker.io/example:1.0" } };

// --- Loading the protocol straight from protos/ ------------------------------

const definition = protoLoader.loadSync("ivoa/ep/v1/execution_planner.proto", {
  includeDirs: [PROTOS],
  keepCase: true, // field names as in the .proto: server_version, not serverVersion
  enums: String, // "YES", "NO", "PLUGIN_STATE_LOADED"...
  longs: String, // int64 as decimal strings
  defaults: true,
  oneofs: true, // google.protobuf.Value says which member is set in `kind`
});
const ep = grpc.loadPackageDefinition(definition).ivoa.ep.v1;

// --- google.protobuf.Struct <-> plain JavaScript -----------------------------
// proto-loader hands Struct over in its protobuf shape, {fields: {k: Value}},
// and expects it so on the way in.

function toValue(x) {
  if (x === null || x === undefined) return { nullValue: "NULL_VALUE" };
  if (typeof x === "number") return { numberValue: x };
  if (typeof x === "string") return { stringValue: x };
  if (typeof x === "boolean") return { boolValue: x };
  if (Array.isArray(x)) return { listValue: { values: x.map(toValue) } };
  return { structValue: toStruct(x) };
}

function toStruct(obj) {
  return { fields: Object.fromEntries(Object.entries(obj).map(([k, v]) => [k, toValue(v)])) };
}

function fromValue(v) {
  switch (v.kind) {
    case "nullValue":
      return null;
    case "numberValue":
      return v.numberValue;
    case "stringValue":
      return v.stringValue;
    case "boolValue":
      return v.boolValue;
    case "listValue":
      return (v.listValue.values || []).map(fromValue);
    case "structValue":
      return fromStruct(v.structValue);
    default:
      throw new Error(`google.protobuf.Value with no kind set: ${JSON.stringify(v)}`);
  }
}

function fromStruct(s) {
  return Object.fromEntries(Object.entries((s && s.fields) || {}).map(([k, v]) => [k, fromValue(v)]));
}

// --- The server under test -----------------------------------------------------

function startServer() {
  // The packaged default config, whatever the caller's environment says.
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !(k === "EP_CONFIG" || (k.startsWith("EP_") && k.includes("__")))),
  );
  // ...except a throwaway booking ledger: a test must not write to the
  // user's state directory, nor wait on a ledger another server holds.
  env.EP_SCHEDULE__LEDGER = ":memory:";
  // Its HTTP door on a free port too, not on the default 8080.
  const proc = spawn(EP_SERVER, ["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"], {
    env,
    stdio: ["ignore", "ignore", "pipe"],
  });
  const log = [];
  const exited = new Promise((resolve) => proc.on("exit", (code, signal) => resolve({ code, signal })));
  const address = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`ep-server did not log "listening on" within ${START_TIMEOUT_MS} ms:\n${log.join("\n")}`));
    }, START_TIMEOUT_MS);
    proc.on("error", (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot start ${EP_SERVER} (run \`make install\`): ${err.message}`));
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`ep-server exited (code ${code}, signal ${signal}) before listening:\n${log.join("\n")}`));
    });
    createInterface({ input: proc.stderr }).on("line", (line) => {
      log.push(line);
      const match = /listening on 127\.0\.0\.1:(\d+)/.exec(line);
      if (match) {
        clearTimeout(timer);
        resolve(`127.0.0.1:${match[1]}`);
      }
    });
  });
  return { proc, log, exited, address };
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// --- The client ------------------------------------------------------------------

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, { deadline: Date.now() + CALL_TIMEOUT_MS }, (err, reply) => (err ? reject(err) : resolve(reply)));
  });
}

const ask = (client, tasktype, taskinfo = {}) => unary(client, "Ask", { tasktype, taskinfo: toStruct(taskinfo) });

describe("Node.js client (@grpc/grpc-js + @grpc/proto-loader on protos/)", () => {
  let server = null;
  let client = null;

  before(async () => {
    let address = TARGET;
    if (!address) {
      server = startServer();
      address = await server.address;
    }
    client = new ep.ExecutionPlannerService(address, grpc.credentials.createInsecure());
    await new Promise((resolve, reject) =>
      client.waitForReady(Date.now() + CALL_TIMEOUT_MS, (err) => (err ? reject(err) : resolve())),
    );
  }, { timeout: START_TIMEOUT_MS + CALL_TIMEOUT_MS });

  after(() => {
    if (client) client.close();
    if (server && server.proc.exitCode === null && server.proc.signalCode === null) {
      server.proc.kill("SIGKILL"); // only if the SIGTERM test failed or never ran
    }
  });

  it("Ask: the IVOA note's example gets YES with an offer", { timeout: CALL_TIMEOUT_MS }, async () => {
    const answer = await ask(client, SEED.tasktype, SEED.taskinfo);
    assert.equal(answer.responseword, "YES");
    assert.ok(answer.offers.length >= 1, "a YES carries at least one offer");
    const offer = answer.offers[0];
    assert.equal(offer.servicetype, "uri://docker-uws");
    const serviceinfo = fromStruct(offer.serviceinfo);
    assert.equal(typeof serviceinfo.endpoint, "string");
    assert.match(serviceinfo.endpoint, /^https?:\/\/\S+$/);
    assert.ok(offer.plugin, "the offer names its plugin");
  });

  it("Ask: an unknown task type is NO with reason UNSUPPORTED_TASK_TYPE", { timeout: CALL_TIMEOUT_MS }, async () => {
    const answer = await ask(client, "uri://no-such-task-type", { anything: [1, "two", true, null, { three: 3 }] });
    assert.equal(answer.responseword, "NO");
    assert.deepEqual(answer.offers, []);
    const reason = answer.reasons.find((r) => r.code === "UNSUPPORTED_TASK_TYPE");
    assert.ok(reason, `reasons: ${JSON.stringify(answer.reasons)}`);
    assert.equal(reason.cause, "REASON_CAUSE_REQUEST");
  });

  it("Ask: an empty tasktype is INVALID_ARGUMENT (status 3)", { timeout: CALL_TIMEOUT_MS }, async () => {
    await assert.rejects(ask(client, "", SEED.taskinfo), (err) => {
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(err.code, 3);
      assert.match(err.details, /tasktype/);
      return true;
    });
  });

  it("GetServiceInfo: lists the plugins and the task types", { timeout: CALL_TIMEOUT_MS }, async () => {
    const info = await unary(client, "GetServiceInfo", {});
    assert.ok(info.server_version, "server_version is set");
    const plugins = Object.fromEntries(info.plugins.map((p) => [p.name, p]));
    assert.ok(plugins.static, `plugins: ${Object.keys(plugins)}`);
    assert.equal(plugins.static.state, "PLUGIN_STATE_LOADED");
    const claimants = info.plugins.filter((p) => p.state === "PLUGIN_STATE_LOADED" && p.tasktypes.includes(SEED.tasktype));
    assert.ok(claimants.length >= 1, "a loaded plugin claims the example's task type");
    const tasktypes = info.tasktypes.map((t) => t.tasktype);
    assert.ok(tasktypes.includes(SEED.tasktype), `tasktypes: ${tasktypes}`);
    assert.equal(typeof info.capacity.cores, "string", "int64 arrives as a string (longs: String)");
    assert.ok(Number(info.capacity.cores) >= 1);
  });

  it("the server stops on SIGTERM and exits 0", { timeout: STOP_TIMEOUT_MS + 1_000 }, async (t) => {
    if (!server) {
      t.skip(`asking EP_TEST_TARGET=${TARGET}, which this test did not start`);
      return;
    }
    client.close();
    client = null;
    assert.ok(server.proc.kill("SIGTERM"));
    const { code, signal } = await withTimeout(server.exited, STOP_TIMEOUT_MS, "ep-server after SIGTERM");
    assert.equal(signal, null, `killed by ${signal}:\n${server.log.join("\n")}`);
    assert.equal(code, 0, `exit code ${code}:\n${server.log.join("\n")}`);
  });
});
