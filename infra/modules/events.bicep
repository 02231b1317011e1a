// The trigger: an Event Grid system topic on the data account and, once the splitter is
// published, a subscription that hands every committed blob under input/ to it.
//
// Filter: BlobCreated under input/ whose data.api is a call that commits a whole blob
// (PutBlob, PutBlockList, CopyBlob, FlushWithClose). Staged blocks, partial appends and the
// create of an empty file before a Data Lake flush never reach the splitter.
//
// Retry: up to 30 attempts within 24 hours, Event Grid backing off from seconds to an hour.
// The splitter is idempotent (the job id comes from the blob's ETag), so retrying a delivery
// it half-handled is safe; a day covers a Functions outage or a bad release. After that the
// event goes to the system account's eventgrid-deadletter container, for an operator to replay.

@description('Region of the system topic (the data account region).')
param location string

@description('Name of the system topic.')
param topicName string

@description('Resource id of the data account.')
param dataAccountId string

@description('Resource id of the system account (dead-letter destination).')
param systemAccountId string

@description('Resource id of the identity the topic writes dead letters with.')
param identityId string

@description('Resource id of the function app.')
param functionAppId string

@description('Create the subscription; false until the splitter function exists, which Event Grid checks.')
param subscribe bool

@description('Log Analytics workspace for delivery failures.')
param workspaceId string

@description('Action group the alerts notify.')
param actionGroupId string

@description('Tags for every resource.')
param tags object

resource topic 'Microsoft.EventGrid/systemTopics@2024-06-01-preview' = {
  name: topicName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    source: dataAccountId
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource splitter 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2024-06-01-preview' = if (subscribe) {
  parent: topic
  name: 'splitter-input-created'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/splitter'
        // One upload per invocation: a slow video never holds up the next one.
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
      ]
      subjectBeginsWith: '/blobServices/default/containers/input/blobs/'
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.api'
          values: [
            'PutBlob'
            'PutBlockList'
            'CopyBlob'
            'FlushWithClose'
          ]
        }
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'UserAssigned'
        userAssignedIdentity: identityId
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: systemAccountId
          blobContainerName: 'eventgrid-deadletter'
        }
      }
    }
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: topic
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'DeliveryFailures'
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

// An event the splitter could not take (the function down, failing, or missing) is retried for a
// day and then dead-lettered to the system account: both are worth an operator's attention.
// DeliveryAttemptFailCount fires on the first failed attempt, DeadLetteredCount when Event Grid
// gives up on an upload.
var topicAlerts = [
  {
    name: 'delivery-failures'
    metric: 'DeliveryAttemptFailCount'
    severity: 2
    description: 'Event Grid failed to deliver an upload event to the splitter (it retries for 24 hours): check the function app and its logs.'
  }
  {
    name: 'dead-lettered-events'
    metric: 'DeadLetteredCount'
    severity: 1
    description: 'Event Grid gave up on an upload event and wrote it to the eventgrid-deadletter container of the system account: the upload was never split; re-upload or replay it.'
  }
]

resource topicAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = [for alert in topicAlerts: {
  name: '${topicName}-${alert.name}'
  location: 'global'
  tags: tags
  properties: {
    description: alert.description
    severity: alert.severity
    enabled: true
    scopes: [
      topic.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: alert.name
          metricNamespace: 'Microsoft.EventGrid/systemTopics'
          metricName: alert.metric
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Total'
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
}]

@description('Name of the system topic.')
output topicName string = topic.name
