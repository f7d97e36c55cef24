// Benchmark peer for handler/: the Express shape Cloud Run task tutorials use, same routes and
// the same work per task (validate the body, run the action, log one JSON line per task).
'use strict';
const express = require('express');

const ACTIONS = new Set(['send_confirmation', 'update_inventory', 'notify_warehouse']);
const app = express();
app.use(express.json({ limit: '1mb' }));

app.get('/', (req, res) => res.json({ status: 'ok' }));

app.post('/process-order', (req, res) => {
  const body = req.body || {};
  const taskName = req.get('X-CloudTasks-TaskName') || null;
  if (typeof body.orderId !== 'string' || typeof body.action !== 'string' || !ACTIONS.has(body.action)) {
    console.log(JSON.stringify({ severity: 'ERROR', message: 'rejected task', task: taskName }));
    return res.status(200).json({ status: 'rejected', reason: 'invalid order' });
  }
  console.log(JSON.stringify({
    severity: 'INFO', message: `${body.action} for order ${body.orderId}`,
    'logging.googleapis.com/labels': {
      task_name: taskName, queue_name: req.get('X-CloudTasks-QueueName') || null,
      retry_count: req.get('X-CloudTasks-TaskRetryCount') || '0',
    },
  }));
  res.json({ status: 'done', orderId: body.orderId, action: body.action });
});

const port = parseInt(process.env.PORT || '8080', 10);
const server = app.listen(port, process.env.HOST || '0.0.0.0');
process.on('SIGTERM', () => server.close(() => process.exit(0)));
