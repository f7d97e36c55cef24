// Drives every RPC the emulator implements with the official Node client, over gRPC (an insecure channel
// to CLOUD_TASKS_EMULATOR_HOST) or, with TRANSPORT=rest, in its REST fallback mode (plain HTTP to
// EMULATOR_HTTP_HOST), then prints one JSON line of what it saw for tests/emulator/test_node_client.py.
'use strict';
const { CloudTasksClient } = require('@google-cloud/tasks');
const grpc = require('@grpc/grpc-js');
const { PassThroughClient } = require('google-auth-library');

function makeClient() {
  if (process.env.TRANSPORT === 'rest') {
    const [host, port] = process.env.EMULATOR_HTTP_HOST.split(':');
    // PassThroughClient sends no credentials, as an emulator wants.
    return new CloudTasksClient({ fallback: 'rest', protocol: 'http', servicePath: host, port: Number(port),
      authClient: new PassThroughClient(), universeDomain: 'googleapis.com' });
  }
  const [host, port] = process.env.CLOUD_TASKS_EMULATOR_HOST.split(':');
  return new CloudTasksClient({
    servicePath: host, port: Number(port), sslCreds: grpc.credentials.createInsecure(),
    universeDomain: 'googleapis.com',
  });
}

async function main() {
  const client = makeClient();
  const parent = 'projects/tasklane-node/locations/us-central1';
  const name = `${parent}/queues/node-queue`;
  const seen = {};
  const [queue] = await client.createQueue({ parent, queue: { name, retryConfig: { maxAttempts: 3 } } });
  seen.created = queue.retryConfig.maxAttempts;
  const [updated] = await client.updateQueue({ queue: { name, rateLimits: { maxDispatchesPerSecond: 7 } },
    updateMask: { paths: ['rate_limits.max_dispatches_per_second'] } });
  seen.rate = updated.rateLimits.maxDispatchesPerSecond;
  seen.got = (await client.getQueue({ name }))[0].name;
  seen.listed = (await client.listQueues({ parent }))[0].length;
  seen.paused = (await client.pauseQueue({ name }))[0].state;
  const body = Buffer.from(JSON.stringify({ orderId: 'node-1', action: 'update_inventory' })).toString('base64');
  const [task] = await client.createTask({ parent: name, responseView: 'FULL', task: {
    name: `${name}/tasks/node-task`,
    httpRequest: { url: process.env.TARGET_URL, httpMethod: 'POST', body,
      headers: { 'Content-Type': 'application/json' } } } });
  seen.taskBody = Buffer.from(task.httpRequest.body).toString();
  seen.gotTask = (await client.getTask({ name: task.name }))[0].name;
  seen.tasks = (await client.listTasks({ parent: name }))[0].length;
  try {
    await client.createTask({ parent: name, task: { name: task.name, httpRequest: { url: process.env.TARGET_URL } } });
  } catch (error) { seen.duplicate = error.code; }
  const [second] = await client.createTask({ parent: name, task: { httpRequest: { url: process.env.TARGET_URL } } });
  await client.deleteTask({ name: second.name });
  seen.ran = (await client.runTask({ name: task.name }))[0].dispatchCount;
  seen.resumed = (await client.resumeQueue({ name }))[0].state;
  seen.purged = Boolean((await client.purgeQueue({ name }))[0].purgeTime);
  await client.deleteQueue({ name });
  try { await client.getQueue({ name }); } catch (error) { seen.deleted = error.code; }
  await client.close();
  console.log(JSON.stringify(seen));
}

main().catch((error) => { console.error(error); process.exit(1); });
