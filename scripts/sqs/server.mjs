// A throwaway SQS server for the bridge tests: fauxqs (npm), listening on 127.0.0.1 only.
//
//     node scripts/sqs/server.mjs PORT FAUXQS_DIR
//
// FAUXQS_DIR is the installed package (node_modules/fauxqs, see scripts/with-sqs.sh). fauxqs's
// own CLI binds 0.0.0.0 (hard-coded in dist/app.js); this builds the same app with the same
// in-memory stores (what `startFauxqs` in dist/app.js does) and listens on loopback, without
// request logging. State is in memory only: a restarted server starts empty.
//
// For the suite's wire tap it also records what is sent to each queue (SendMessage and
// SendMessageBatch, through fauxqs's message spy hook) and serves it, non-destructively, at
// `GET /_eventdriven/sent/QUEUE?from=N`: `{"messages": [{messageId, body, attributes}, ...]}`
// (the messages from the Nth on, in the order the server took them). SQS has no way to look
// at a queue's messages without taking them from the consumers.
import path from "node:path";
import { pathToFileURL } from "node:url";

const [port, dir] = process.argv.slice(2);
if (!port || !dir) {
    console.error("usage: node server.mjs PORT FAUXQS_DIR");
    process.exit(2);
}
const load = (file) => import(pathToFileURL(path.join(dir, "dist", file)).href);
const { buildApp } = await load("app.js");
const { SqsStore } = await load("sqs/sqsStore.js");
const { SnsStore } = await load("sns/snsStore.js");
const { S3Store } = await load("s3/s3Store.js");

/** What was sent, per queue name. */
const sent = new Map();
const recorder = {
    addMessage(event) {
        if (event.service !== "sqs" || event.status !== "published") {
            return;
        }
        const attributes = {};
        for (const [name, value] of Object.entries(event.messageAttributes ?? {})) {
            attributes[name] = value.StringValue ?? value.stringValue ?? null;
        }
        const list = sent.get(event.queueName) ?? [];
        list.push({ messageId: event.messageId, body: event.body, attributes });
        sent.set(event.queueName, list);
    },
};

const sqsStore = new SqsStore();
sqsStore.spy = recorder;
const app = buildApp({
    logger: false,
    stores: { sqsStore, snsStore: new SnsStore(), s3Store: new S3Store() },
});
app.get("/_eventdriven/sent/:queueName", async (request) => {
    const from = Math.max(0, parseInt(request.query.from ?? "0", 10) || 0);
    return { messages: (sent.get(request.params.queueName) ?? []).slice(from) };
});
await app.listen({ port: parseInt(port, 10), host: "127.0.0.1" });
for (const signal of ["SIGTERM", "SIGINT"]) {
    process.on(signal, () => {
        app.close().finally(() => process.exit(0));
    });
}
