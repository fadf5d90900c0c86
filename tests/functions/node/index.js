// The handler: one subsegment with an annotation and a nested one, sent by aws-xray-sdk-core
// (a new UDP socket per send, millisecond timestamps) to AWS_XRAY_DAEMON_ADDRESS.
'use strict';

const AWSXRay = require('aws-xray-sdk-core');

AWSXRay.setContextMissingStrategy('LOG_ERROR');

exports.handler = async (event) => {
  const segment = AWSXRay.getSegment();
  const work = segment.addNewSubsegment('node-work');
  work.addAnnotation('customer', 'c-123');
  const inner = work.addNewSubsegment('node-inner');
  inner.close();
  work.close();
  if (event.error) {
    const e = new Error('the event asked for an error');
    e.name = 'NodeError';
    throw e;
  }
  return { sent_ids: [work.id, inner.id], trace_id: segment.trace_id };
};
