// The Node.js etcd3 client (npm `etcd3`, on @grpc/grpc-js) against the endpoints given as
// arguments: KV, transactions, leases, watches, locks, elections and maintenance calls, each
// result checked. Keys live under "js/", so the suite leaves the rest of the key space alone.
// Prints "etcd3 js suite OK" last when every check held.
'use strict';
const { Etcd3, Election } = require('etcd3');

const hosts = process.argv.slice(2);
if (hosts.length === 0) {
  console.error('usage: etcd3_suite.js HOST:PORT...');
  process.exit(2);
}
const client = new Etcd3({ hosts });
const ns = client.namespace('js/');
let failed = 0;
function check(cond, what) {
  if (!cond) {
    failed += 1;
    console.error('FAILED:', what);
  }
}

async function expectError(promise, pattern, what) {
  try {
    await promise;
    check(false, `${what}: no error`);
  } catch (e) {
    check(pattern.test(e.message), `${what}: ${e.message}`);
  }
}

async function kv() {
  await ns.put('foo').value('bar');
  check((await ns.get('foo').string()) === 'bar', 'get after put');
  for (const [k, v] of [['p/a', '1'], ['p/b', '2'], ['p/c', '3']]) {
    await ns.put(k).value(v);
  }
  const all = await ns.getAll().prefix('p/').strings();
  check(JSON.stringify(all) === '{"p/a":"1","p/b":"2","p/c":"3"}', `prefix get ${JSON.stringify(all)}`);
  check((await ns.getAll().prefix('p/').count()) === 3, 'count');
  const keys = await ns.getAll().prefix('p/').sort('Key', 'Descend').limit(2).keys();
  check(JSON.stringify(keys) === '["p/c","p/b"]', `sort and limit ${JSON.stringify(keys)}`);
  const prev = await ns.delete().key('p/a').getPrevious();
  check(prev.length === 1 && prev[0].value.toString() === '1', 'delete returns the previous value');
  const swapped = await ns.if('foo', 'Value', '==', 'bar')
    .then(ns.put('foo').value('baz'))
    .else(ns.get('foo'))
    .commit();
  check(swapped.succeeded === true, 'transaction: compare holds');
  const kept = await ns.if('foo', 'Version', '>', 100)
    .then(ns.put('never').value('x'))
    .else(ns.get('foo'))
    .commit();
  check(
    kept.succeeded === false && kept.responses[0].response_range.kvs[0].value.toString() === 'baz',
    'transaction: else branch reads',
  );
  check((await ns.get('never').string()) === null, 'the then branch did not run');
}

async function leases() {
  const lease = ns.lease(5);
  await lease.put('leased').value('v');
  const id = await lease.grant();
  const ttl = await client.leaseClient.leaseTimeToLive({ ID: id, keys: true });
  check(Number(ttl.TTL) > 0 && Number(ttl.TTL) <= 5, `lease TTL ${ttl.TTL}`);
  check(ttl.keys.length === 1 && ttl.keys[0].toString() === 'js/leased', 'lease keys');
  const listed = await client.leaseClient.leaseLeases({});
  check(listed.leases.some(l => l.ID === id), 'lease listed');
  await lease.revoke();
  check((await ns.get('leased').string()) === null, 'revoking deletes the key');
  await expectError(
    client.leaseClient.leaseRevoke({ ID: '12345' }),
    /requested lease not found/,
    'revoking an unknown lease',
  );
}

async function watches() {
  const w = await ns.watch().key('w').create();
  const put = new Promise(res => w.once('put', kv => res(kv.value.toString())));
  const deleted = new Promise(res => w.once('delete', kv => res(kv.key.toString())));
  await ns.put('w').value('1');
  check((await put) === '1', 'watch sees the put');
  await ns.delete().key('w');
  const gone = await deleted;
  check(gone === 'w', `watch sees the delete ${gone}`);
  await w.cancel();
}

async function recipes() {
  const lock = ns.lock('lock');
  await lock.acquire();
  await expectError(ns.lock('lock').acquire(), /Failed to acquire/, 'a held lock');
  await lock.release();
  const again = ns.lock('lock');
  await again.acquire();
  await again.release();

  const election = new Election(ns, 'election');
  const campaign = election.campaign('candidate-1');
  await new Promise((res, rej) => {
    campaign.once('elected', res);
    campaign.once('error', rej);
  });
  check((await election.leader()) === 'candidate-1', 'election leader');
  await campaign.resign();
}

async function maintenance() {
  const st = await client.maintenance.status();
  check(Number(st.header.revision) > 0 && /^3\./.test(st.version), `status ${st.version}`);
  const members = await client.cluster.memberList({});
  check(members.members.length === hosts.length, `members ${members.members.length}`);
  const first = await ns.put('c').value('1').exec();
  await ns.put('c').value('2');
  await client.kv.compact({ revision: first.header.revision, physical: true });
  await expectError(
    ns.get('c').revision(Number(first.header.revision) - 1).string(),
    /required revision has been compacted/,
    'a read below the compaction',
  );
  await expectError(
    ns.put('big').value(Buffer.alloc(1700 * 1024)),
    /request is too large/,
    'a request over --max-request-bytes',
  );
  const alarms = await client.maintenance.alarm({ action: 'Get', memberID: 0, alarm: 'None' });
  check(alarms.alarms.length === 0, 'no alarms');
}

(async () => {
  await kv();
  await leases();
  await watches();
  await recipes();
  await maintenance();
  await ns.delete().all();
  check((await ns.getAll().count()) === 0, 'the suite leaves nothing behind');
  client.close();
  if (failed > 0) {
    process.exit(1);
  }
  console.log('etcd3 js suite OK');
})().catch(e => {
  console.error('error:', e);
  process.exit(1);
});
