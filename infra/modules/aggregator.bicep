// The aggregator: a CPU container app in the workers' Container Apps environment that consumes
// the stitch queue with the shared consume loop (stylefleet-functions aggregate), scaled by KEDA
// on the queue's length from zero.
//
// Why a container and not a Service Bus-triggered function: a Functions custom handler cannot
// settle its message. The host completes it on a 2xx answer and abandons it otherwise, so a
// stitch that can never succeed either loops until Service Bus dead-letters it with
// MaxDeliveryCountExceeded (the real reason lost) or is completed and gone (nothing to replay).
// The consume loop dead-letters a permanent failure on its first delivery with the stage's
// reason, renews the lock while it stitches and drains on SIGTERM, as the workers do; a replay
// of the dead letter then revives the job.

@description('Region of the app.')
param location string

@description('Name of the aggregator container app.')
param appName string

@description('Resource id of the Container Apps environment (workers.bicep).')
param environmentId string

@description('Aggregator image as repository:tag in the registry (functions/Dockerfile, target aggregator); empty creates nothing.')
param aggregatorImage string

@description('Login server of the registry, e.g. name.azurecr.io.')
param registryLoginServer string

@description('Most aggregator replicas at once; each stitches one job at a time.')
@minValue(1)
@maxValue(30)
param maxAggregators int = 4

@description('Seconds a stopping aggregator may spend finishing its stitch (STYLEFLEET_SHUTDOWN_GRACE_SECS).')
@minValue(30)
@maxValue(570)
param stitchGraceSeconds int = 300

@description('Seconds the last replica stays up after the stitch queue drains (KEDA cooldownPeriod).')
@minValue(60)
@maxValue(3600)
param idleSeconds int = 120

@description('Max delivery count of the stitch queue (servicebus.bicep): at its last attempt a transient failure fails the job with the reason.')
@minValue(1)
@maxValue(100)
param stitchMaxDeliveries int

@description('Resource id of the aggregator identity (the only one the code can use).')
param aggregatorIdentityId string

@description('Client id of the aggregator identity.')
param aggregatorIdentityClientId string

@description('Resource id of the scaler identity (KEDA only).')
param scalerIdentityId string

@description('Resource id of the image-pull identity (platform only).')
param pullIdentityId string

@description('Name of the data account.')
param dataAccountName string

@description('Name of the system account.')
param systemAccountName string

@description('Name of the Service Bus namespace.')
param namespaceName string

@description('RUST_LOG filter for the aggregator.')
param rustLog string = 'info'

@description('Action group the alerts notify.')
param actionGroupId string

@description('Name of the Application Insights component telemetry goes to.')
param insightsName string

@description('Tags for every resource.')
param tags object

var storageSuffix = environment().suffixes.storage

resource insights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: insightsName
}

// Kubernetes may kill a replica this long after SIGTERM: the stitch grace plus time to abandon
// an unfinished message and flush logs. Container Apps caps it at 600 seconds.
var terminationGraceSeconds = stitchGraceSeconds + 30

resource aggregator 'Microsoft.App/containerApps@2025-01-01' = if (!empty(aggregatorImage)) {
  name: appName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${aggregatorIdentityId}': {}
      '${scalerIdentityId}': {}
      '${pullIdentityId}': {}
    }
  }
  properties: {
    environmentId: environmentId
    // Stitching copies streams and runs ffprobe: CPU work, no GPU.
    workloadProfileName: 'Consumption'
    configuration: {
      activeRevisionsMode: 'Single'
      registries: [
        {
          server: registryLoginServer
          identity: pullIdentityId
        }
      ]
      // Only the aggregator identity reaches the container; the scaler (Manage on the queues)
      // and the pull identity serve the platform alone.
      identitySettings: [
        {
          identity: aggregatorIdentityId
          lifecycle: 'Main'
        }
        {
          identity: scalerIdentityId
          lifecycle: 'None'
        }
        {
          identity: pullIdentityId
          lifecycle: 'None'
        }
      ]
    }
    template: {
      terminationGracePeriodSeconds: terminationGraceSeconds
      containers: [
        {
          name: 'aggregator'
          image: '${registryLoginServer}/${aggregatorImage}'
          // The handler binary's stitch-consumer mode, said here rather than left to the image.
          args: [
            'aggregate'
          ]
          // 2 vCPU: the largest ephemeral disk of the Consumption profile, where a stitch keeps
          // the source, the chunks and the output.
          resources: {
            cpu: 2
            memory: '4Gi'
          }
          env: [
            {
              name: 'STYLEFLEET_STORE'
              value: 'https://${dataAccountName}.blob.${storageSuffix}'
            }
            {
              name: 'STYLEFLEET_LOG_STORE'
              value: 'https://${systemAccountName}.blob.${storageSuffix}'
            }
            {
              name: 'STYLEFLEET_QUEUE'
              value: 'servicebus://${namespaceName}.servicebus.windows.net'
            }
            {
              name: 'AZURE_CLIENT_ID'
              value: aggregatorIdentityClientId
            }
            {
              name: 'STYLEFLEET_MAX_DELIVERIES'
              value: string(stitchMaxDeliveries)
            }
            {
              name: 'STYLEFLEET_HEALTH_PORT'
              value: '8080'
            }
            {
              name: 'STYLEFLEET_SHUTDOWN_GRACE_SECS'
              value: string(stitchGraceSeconds)
            }
            {
              name: 'RUST_LOG'
              value: rustLog
            }
            // Telemetry to the deployment's Application Insights (local auth off: the connection
            // string only names it; uploads carry a token of this identity, which holds
            // Monitoring Metrics Publisher on it).
            {
              name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
              value: insights.properties.ConnectionString
            }
            {
              name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
              value: 'ClientId=${aggregatorIdentityClientId};Authorization=AAD'
            }
          ]
          probes: [
            {
              // The port opens once the stores, the queue and ffmpeg answered.
              type: 'Startup'
              tcpSocket: {
                port: 8080
              }
              periodSeconds: 10
              failureThreshold: 10
            }
            {
              type: 'Liveness'
              tcpSocket: {
                port: 8080
              }
              periodSeconds: 30
              failureThreshold: 3
            }
          ]
        }
      ]
      scale: {
        minReplicas: 0
        maxReplicas: maxAggregators
        pollingInterval: 15
        cooldownPeriod: idleSeconds
        rules: [
          {
            // One replica per waiting stitch: each consumes one message at a time.
            name: 'stitch-backlog'
            custom: {
              type: 'azure-servicebus'
              metadata: {
                queueName: 'stitch'
                namespace: namespaceName
                messageCount: '1'
                activationMessageCount: '0'
              }
              identity: scalerIdentityId
            }
          }
        ]
      }
    }
  }
}

// Container restarts: a crash, an out-of-memory kill or a failed liveness probe (a replica that
// KEDA scales in is stopped, not restarted, and does not count).
resource restartAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = if (!empty(aggregatorImage)) {
  name: '${appName}-restarts'
  location: 'global'
  tags: tags
  properties: {
    description: 'An aggregator container restarted (crash, out of memory, e.g. a full disk, or a failed liveness probe): its stitch returns to the queue after the lock expires. See ContainerAppSystemLogs and ContainerAppConsoleLogs.'
    severity: 2
    enabled: true
    scopes: [
      aggregator.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'restarts'
          metricNamespace: 'Microsoft.App/containerApps'
          metricName: 'RestartCount'
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
}

@description('Name of the aggregator app (empty until an aggregator image is given).')
output appName string = empty(aggregatorImage) ? '' : appName
