// The real AG-UI client against a running Runloom: @ag-ui/client's HttpAgent (its event
// verifier and default apply included), pointed at POST /v1/agui with nothing but the URL and
// the key. For resume, AG-UI's own re-attach seam (AbstractAgent.connect) opens
// GET /v1/agui/runs/{runId} with Last-Event-ID.
//
//   node agui-client.mjs '<json config>'   -> writes the outcome as JSON to config.out
//
// config: { base, key, mode: "run" | "cut" | "resume" | "interrupt", question, threadId,
//           forwardedProps, cutAfterContent, runId, lastEventId, messages, state, answer, out }
import { HttpAgent, runHttpRequest, transformHttpEventStream } from "@ag-ui/client";
import { writeFileSync } from "node:fs";

const cfg = JSON.parse(process.argv[2]);

// A fetch that records every SSE frame as received (raw text, id, event) and, when asked,
// drops the connection right after the n-th TEXT_MESSAGE_CONTENT frame: a cut mid-message.
function recordingFetch(record, cutAfterContent) {
  return async (url, init) => {
    const response = await fetch(url, init);
    if (!response.ok || !response.body) return response;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    const encoder = new TextEncoder();
    let buffer = "";
    let contents = 0;
    const body = new ReadableStream({
      async pull(controller) {
        const { done, value } = await reader.read();
        if (done) {
          controller.close();
          return;
        }
        buffer += decoder.decode(value, { stream: true });
        const parts = buffer.split("\n\n");
        buffer = parts.pop();
        for (const part of parts) {
          const frame = part + "\n\n";
          record.raw.push(frame);
          const lines = part.split("\n");
          const id = lines.find((l) => l.startsWith("id:"));
          const data = lines.filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim());
          if (id) record.lastEventId = id.slice(3).trim();
          if (data.length) {
            const event = JSON.parse(data.join("\n"));
            record.frames.push({ id: id ? id.slice(3).trim() : null, event });
            if (event.type === "TEXT_MESSAGE_CONTENT") contents += 1;
          }
          controller.enqueue(encoder.encode(frame));
          if (cutAfterContent && contents >= cutAfterContent) {
            record.cut = true;
            await reader.cancel();
            controller.close();
            return;
          }
        }
      },
      cancel() {
        return reader.cancel();
      },
    });
    return new Response(body, { status: response.status, headers: response.headers });
  };
}

class ResumingAgent extends HttpAgent {
  constructor(config, base, runId, lastEventId) {
    super(config);
    this.base = base;
    this.runId = runId;
    this.lastEventId = lastEventId;
  }

  connect() {
    const headers = { ...this.headers, Accept: "text/event-stream" };
    if (this.lastEventId) headers["Last-Event-ID"] = this.lastEventId;
    const url = `${this.base}/v1/agui/runs/${encodeURIComponent(this.runId)}`;
    const init = { method: "GET", headers, signal: this.abortController.signal };
    return transformHttpEventStream(runHttpRequest(() => this.fetch(url, init)));
  }
}

const record = { raw: [], frames: [], lastEventId: null, cut: false };
const headers = { Authorization: `Bearer ${cfg.key}` };
const common = {
  headers,
  threadId: cfg.threadId,
  fetch: recordingFetch(record, cfg.cutAfterContent),
  initialMessages: cfg.messages ?? [],
  initialState: cfg.state ?? {},
};
const out = { errors: [], interrupts: [] };
const subscriber = {
  onRunFinishedEvent: (params) => {
    if (params.outcome === "interrupt") out.interrupts.push(...params.interrupts);
  },
  onRunErrorEvent: ({ event }) => {
    out.errors.push(`RUN_ERROR ${event.code}: ${event.message}`);
  },
};

let agent;
try {
  if (cfg.mode === "resume") {
    agent = new ResumingAgent(common, cfg.base, cfg.runId, cfg.lastEventId);
    await agent.connectAgent({}, subscriber);
  } else {
    agent = new HttpAgent({ ...common, url: `${cfg.base}/v1/agui` });
    agent.addMessage({ id: `user-${Date.now()}`, role: "user", content: cfg.question });
    await agent.runAgent({ forwardedProps: cfg.forwardedProps ?? {} }, subscriber);
    if (cfg.mode === "interrupt") {
      const pending = agent.pendingInterrupts.map((i) => i.id);
      out.firstPart = record.frames.length;
      out.firstRaw = record.raw.length;
      const resume = pending.map((id) => ({
        interruptId: id,
        status: "resolved",
        payload: { answer: cfg.answer },
      }));
      await agent.runAgent({ resume, forwardedProps: cfg.forwardedProps ?? {} }, subscriber);
    }
  }
} catch (error) {
  out.errors.push(`${error?.name}: ${error?.message}`);
}

const started = record.frames.find((f) => f.event.type === "RUN_STARTED");
writeFileSync(
  cfg.out,
  JSON.stringify({
    ...out,
    runId: started?.event.runId ?? cfg.runId,
    threadId: agent?.threadId,
    messages: agent?.messages,
    state: agent?.state,
    pendingInterrupts: agent?.pendingInterrupts,
    ...record,
  }),
);
