// Service Bus: the two work queues, the dead-letter subqueues that end poison, and alerts
// that tell an operator when something lands there.
//
// Queue settings, and why:
//
// batches (one message per frame batch, consumed by the GPU workers)
// - lockDuration PT1M: a worker renews the lock while it styles a batch (every third of the
//   lock), so the lock only has to outlive a missed renewal or two; when a replica dies
//   (pre-emption, OOM, scale-in past its grace period) its batch is visible again within a
//   minute instead of five.
// - maxDeliveryCount 5: transient faults (throttling, a lost replica) get four more tries with
//   backoff; a batch that kills every worker that takes it costs at most five GPU attempts
//   before it is dead-lettered and its job turns failed with the reason.
// - defaultMessageTimeToLive P2D, deadLetteringOnMessageExpiration: a backlog that cannot be
//   worked off in two days (quota, a broken image) is moved to the dead-letter subqueue where
//   operators see and replay it, never dropped silently.
// - maxSizeInMegabytes 1024: messages are ~200 bytes, so this holds millions of batches; a flood
//   of uploads fills it and makes senders fail instead of growing the bill.
// - no duplicate detection: message ids are "<job>:<batch>", and every handler is idempotent;
//   detection would also swallow an operator's replay sent within the window.
//
// stitch (one message per job, consumed by the aggregator container)
// - lockDuration PT5M: stitching streams every chunk of a long video; the aggregator renews the
//   lock while it works, and the longest lock Service Bus allows keeps renewals rare.
// - maxDeliveryCount 10: a stitch is cheap compared with the job it ends, so transient failures
//   get more tries before the job is failed (the aggregator reads this count as
//   STYLEFLEET_MAX_DELIVERIES, so its last attempt fails the job with the reason); malformed
//   messages and permanent failures are dead-lettered by the code on first sight, with the reason.
// - defaultMessageTimeToLive P7D, deadLetteringOnMessageExpiration: as above.

@description('Region of the namespace.')
param location string

@description('Name of the Service Bus namespace.')
param namespaceName string

@description('Log Analytics workspace for operational logs and metrics.')
param workspaceId string

@description('Action group the alerts notify.')
param actionGroupId string

@description('Tags for every resource.')
param tags object

// The aggregator is told the same number (STYLEFLEET_MAX_DELIVERIES).
var stitchMaxDeliveries = 10

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' = {
  name: namespaceName
  location: location
  tags: tags
  sku: {
    // Standard: queues with dead-lettering at a fixed low base price. Premium (private
    // endpoints, network rules, customer-managed keys) costs about 20x more for throughput this
    // fleet never needs; messages hold only job ids and frame ranges, and with local (key) auth
    // disabled every client needs an Entra ID token with a role on one queue.
    name: 'Standard'
    tier: 'Standard'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource batches 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: namespace
  name: 'batches'
  properties: {
    lockDuration: 'PT1M'
    maxDeliveryCount: 5
    defaultMessageTimeToLive: 'P2D'
    deadLetteringOnMessageExpiration: true
    maxSizeInMegabytes: 1024
    requiresDuplicateDetection: false
    requiresSession: false
    enableBatchedOperations: true
    enablePartitioning: false
  }
}

resource stitch 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' = {
  parent: namespace
  name: 'stitch'
  properties: {
    lockDuration: 'PT5M'
    maxDeliveryCount: stitchMaxDeliveries
    defaultMessageTimeToLive: 'P7D'
    deadLetteringOnMessageExpiration: true
    maxSizeInMegabytes: 1024
    requiresDuplicateDetection: false
    requiresSession: false
    enableBatchedOperations: true
    enablePartitioning: false
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: namespace
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
    metrics: [
      {
        category: 'AllMetrics'
        enabled: true
      }
    ]
  }
}

// A dead-lettered message means a failed job (or a flood of malformed messages): surface it.
resource deadLetterAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${namespaceName}-dead-letters'
  location: 'global'
  tags: tags
  properties: {
    description: 'Messages landed in a dead-letter subqueue of batches or stitch: inspect and replay them with stylefleet dlq.'
    severity: 2
    enabled: true
    scopes: [
      namespace.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'dead-lettered'
          metricNamespace: 'Microsoft.ServiceBus/namespaces'
          metricName: 'DeadletteredMessages'
          dimensions: [
            {
              name: 'EntityName'
              operator: 'Include'
              values: [
                'batches'
                'stitch'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Maximum'
          criterionType: 'StaticThresholdCriterion'
        }
      ]
    }
    actions: [
      {
        actionGroupId: actionGroupId
      }
    ]
  }
  dependsOn: [
    batches
    stitch
  ]
}

@description('Name of the namespace.')
output namespaceName string = namespace.name

@description('Max delivery count of the stitch queue.')
output stitchMaxDeliveries int = stitchMaxDeliveries
