// A minimal Lambda runtime: the Runtime API loop (2018-06-01) around the handler _HANDLER names.
// It sets _X_AMZN_TRACE_ID from Lambda-Runtime-Trace-Id on every invoke, as Lambda's Node.js
// runtime does, so the X-Ray SDK builds its facade segment for the invocation.
'use strict';

const http = require('http');
// _HANDLER is `<module>.<export>`, as in Lambda (default index.handler).
const [handlerModule, handlerName] = (process.env._HANDLER || 'index.handler').split('.');
const handler = require(`./${handlerModule}.js`)[handlerName];

const [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(':');
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });

function request(method, path, body, headers = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path, agent, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

async function main() {
  for (;;) {
    const next = await request('GET', '/2018-06-01/runtime/invocation/next');
    const id = next.headers['lambda-runtime-aws-request-id'];
    const trace = next.headers['lambda-runtime-trace-id'];
    if (trace) {
      process.env._X_AMZN_TRACE_ID = trace;
    } else {
      delete process.env._X_AMZN_TRACE_ID;
    }
    try {
      const result = await handler(JSON.parse(next.body), { awsRequestId: id });
      await request('POST', `/2018-06-01/runtime/invocation/${id}/response`, JSON.stringify(result));
    } catch (e) {
      const body = JSON.stringify({ errorType: e.name, errorMessage: e.message });
      await request('POST', `/2018-06-01/runtime/invocation/${id}/error`, body, {
        'Lambda-Runtime-Function-Error-Type': e.name,
      });
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
