// A Node.js function traced with the plain OpenTelemetry SDK and its OTLP/HTTP exporter
// (@opentelemetry/exporter-trace-otlp-http, JSON by default), sending to
// OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces (the extension's receiver). The handler span's parent
// is Lambda's Parent from _X_AMZN_TRACE_ID, so the spans join the invocation's trace. Spans are
// flushed before the handler returns; the response carries every span id made.
'use strict';

const api = require('@opentelemetry/api');
const { BasicTracerProvider, BatchSpanProcessor } = require('@opentelemetry/sdk-trace-base');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-http');
const { resourceFromAttributes } = require('@opentelemetry/resources');

const provider = new BasicTracerProvider({
  resource: resourceFromAttributes({ 'service.name': 'orders-node-otlp' }),
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
});
const tracer = provider.getTracer('orders.node', '1.0');

// Lambda's trace header as a remote parent: Root=1-xxxxxxxx-yyyy…;Parent=…;Sampled=1.
function lambdaParent() {
  const fields = Object.fromEntries(
    (process.env._X_AMZN_TRACE_ID || '').split(';').map((kv) => kv.split('=')),
  );
  if (!fields.Root || !fields.Parent) return api.ROOT_CONTEXT;
  return api.trace.setSpanContext(api.ROOT_CONTEXT, {
    traceId: fields.Root.slice(2).replace('-', ''),
    spanId: fields.Parent,
    traceFlags: fields.Sampled === '1' ? api.TraceFlags.SAMPLED : api.TraceFlags.NONE,
    isRemote: true,
  });
}

exports.handler = async (event) => {
  const parent = lambdaParent();
  const handlerSpan = tracer.startSpan('handler', { kind: api.SpanKind.SERVER }, parent);
  const ids = [handlerSpan.spanContext().spanId];
  const inside = api.trace.setSpan(parent, handlerSpan);
  for (let i = 0; i < (event.children ?? 2); i++) {
    const s = tracer.startSpan(`step-${i}`, { attributes: { step: i } }, inside);
    ids.push(s.spanContext().spanId);
    s.end();
  }
  handlerSpan.end();
  await provider.forceFlush();
  return { span_ids: ids, handler_span_id: ids[0] };
};
