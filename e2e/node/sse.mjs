// sse.mjs URL: reads URL with the eventsource package (a WHATWG
// EventSource for Node) until its standard input ends, and prints one line
// per happening, for e2e/sse_rollout_test.go to check:
//   open | event ID DATA | error MESSAGE | done
import { EventSource } from 'eventsource';

const es = new EventSource(process.argv[2]);
es.onopen = () => console.log('open');
es.onmessage = (e) => console.log(`event ${e.lastEventId} ${e.data}`);
// The stream ended or a connection failed; EventSource reconnects with
// Last-Event-ID unless it closed for good (a non-200 answer).
es.onerror = (e) => console.log(`error ${es.readyState === EventSource.CLOSED ? 'closed ' : ''}${e.message ?? ''}`);
process.stdin.resume();
process.stdin.on('end', () => {
  es.close();
  console.log('done');
  process.exit(0);
});
