// sse.mjs URL MS: reads URL with the eventsource package (a WHATWG
// EventSource for Node) for MS milliseconds and prints one line per
// happening, for e2e/sse_rollout_test.go to check:
//   open | event ID DATA | error MESSAGE | done
import { EventSource } from 'eventsource';

const [url, ms] = process.argv.slice(2);
const es = new EventSource(url);
es.onopen = () => console.log('open');
es.onmessage = (e) => console.log(`event ${e.lastEventId} ${e.data}`);
// The stream ended or a connection failed; EventSource reconnects with
// Last-Event-ID unless it closed for good (a non-200 answer).
es.onerror = (e) => console.log(`error ${es.readyState === EventSource.CLOSED ? 'closed ' : ''}${e.message ?? ''}`);
setTimeout(() => {
  es.close();
  console.log('done');
}, Number(ms));
