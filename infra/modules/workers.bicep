// The GPU workers: a Container Apps environment with a serverless GPU workload profile, and
// the worker app that KEDA scales on the length of the batches queue, from zero. The aggregator
// (aggregator.bicep) runs in the same environment, on its Consumption profile.

@description('Region of the environment.')
param location string

@description('Name of the Container Apps environment.')
param environmentName string

@description('Name of the worker container app.')
param appName string

@description('Subnet of the environment (delegated to Microsoft.App/environments).')
param subnetId string

@description('Worker image as repository:tag in the registry; empty creates the environment only.')
param workerImage string

@description('Login server of the registry, e.g. name.azurecr.io.')
param registryLoginServer string

@description('Where workers run: a serverless T4 or A100 GPU, or CPU-only consumption.')
@allowed([
  'gpu-t4'
  'gpu-a100'
  'cpu'
])
param workerCompute string

@description('The workerCompute the worker app runs on now, while it moves to another (its GPU profile stays in the environment for this deployment); none otherwise.')
@allowed([
  'none'
  'gpu-t4'
  'gpu-a100'
  'cpu'
])
param previousWorkerCompute string = 'none'

@description('Most worker replicas at once.')
@minValue(1)
@maxValue(100)
param maxWorkers int = 10

@description('Waiting batches per replica (KEDA messageCount).')
@minValue(1)
@maxValue(100)
param batchesPerWorker int = 4

@description('Waiting batches that wake the first replica from zero (KEDA activationMessageCount).')
@minValue(0)
@maxValue(100)
param activationBatches int = 0

@description('Seconds a stopping worker may spend finishing its batch (STYLEFLEET_SHUTDOWN_GRACE_SECS).')
@minValue(30)
@maxValue(570)
param batchGraceSeconds int = 240

@description('Seconds the last replica stays up after the queue drains (KEDA cooldownPeriod); raise it when jobs arrive minutes apart.')
@minValue(60)
@maxValue(3600)
param idleSeconds int = 300

@description('Resource id of the worker identity (the only one the code can use).')
param workerIdentityId string

@description('Client id of the worker identity.')
param workerIdentityClientId string

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

@description('Log Analytics workspace for console and system logs.')
param workspaceId string

@description('Resource id of the system account, where logs are archived.')
param systemAccountId string

@description('RUST_LOG filter for the worker.')
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

// A replica takes a whole GPU (the serverless GPU profiles give one per replica); CPU workers
// take the largest consumption replica. Each GPU profile is named after its type, so a changed
// workerCompute adds a new profile and moves the app to it instead of changing the type of a
// profile in use.
var computeProfiles = {
  'gpu-t4': {
    profileName: 'NC8as-T4'
    cpu: 8
    memory: '56Gi'
    device: 'cuda'
  }
  'gpu-a100': {
    profileName: 'NC24-A100'
    cpu: 24
    memory: '220Gi'
    device: 'cuda'
  }
  cpu: {
    profileName: 'Consumption'
    cpu: 4
    memory: '8Gi'
    device: 'cpu'
  }
}

var compute = computeProfiles[workerCompute]

// The GPU workload profile each choice needs in the environment (none for CPU workers).
var gpuProfiles = {
  'gpu-t4': [
    {
      name: 'NC8as-T4'
      workloadProfileType: 'Consumption-GPU-NC8as-T4'
    }
  ]
  'gpu-a100': [
    {
      name: 'NC24-A100'
      workloadProfileType: 'Consumption-GPU-NC24-A100'
    }
  ]
  cpu: []
  none: []
}

var consumptionProfile = {
  name: 'Consumption'
  workloadProfileType: 'Consumption'
}

// While the app moves from one GPU profile to another, the environment keeps both: the old one
// may only go once no app runs on it (deploy.sh deploys once more without previousWorkerCompute).
var keptProfiles = previousWorkerCompute == workerCompute ? [] : gpuProfiles[previousWorkerCompute]

var workloadProfiles = concat([
  consumptionProfile
], gpuProfiles[workerCompute], keptProfiles)

// Kubernetes may kill a replica this long after SIGTERM: the batch grace plus time to abandon
// an unfinished message and flush logs. Container Apps caps it at 600 seconds.
var terminationGraceSeconds = batchGraceSeconds + 30

resource managedEnvironment 'Microsoft.App/managedEnvironments@2025-01-01' = {
  name: environmentName
  location: location
  tags: tags
  properties: {
    // Logs go through the diagnostic setting below (Log Analytics and the system account),
    // so the environment holds no workspace key.
    appLogsConfiguration: {
      destination: 'azure-monitor'
    }
    vnetConfiguration: {
      infrastructureSubnetId: subnetId
      // No ingress anywhere: workers and the aggregator pull work from Service Bus, nothing
      // calls them.
      internal: true
    }
    workloadProfiles: workloadProfiles
    peerTrafficConfiguration: {
      encryption: {
        enabled: true
      }
    }
    zoneRedundant: false
  }
}

resource environmentLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'logs'
  scope: managedEnvironment
  properties: {
    workspaceId: workspaceId
    storageAccountId: systemAccountId
    logs: [
      {
        category: 'ContainerAppConsoleLogs'
        enabled: true
      }
      {
        category: 'ContainerAppSystemLogs'
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

resource worker 'Microsoft.App/containerApps@2025-01-01' = if (!empty(workerImage)) {
  name: appName
  location: location
  tags: tags
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${workerIdentityId}': {}
      '${scalerIdentityId}': {}
      '${pullIdentityId}': {}
    }
  }
  properties: {
    environmentId: managedEnvironment.id
    workloadProfileName: compute.profileName
    configuration: {
      activeRevisionsMode: 'Single'
      registries: [
        {
          server: registryLoginServer
          identity: pullIdentityId
        }
      ]
      // Only the worker identity reaches the container; the scaler (Manage on batches) and the
      // pull identity serve the platform alone.
      identitySettings: [
        {
          identity: workerIdentityId
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
          name: 'worker'
          image: '${registryLoginServer}/${workerImage}'
          resources: {
            cpu: compute.cpu
            memory: compute.memory
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
              value: workerIdentityClientId
            }
            {
              name: 'STYLEFLEET_DEVICE'
              value: compute.device
            }
            {
              name: 'STYLEFLEET_HEALTH_PORT'
              value: '8080'
            }
            {
              name: 'STYLEFLEET_SHUTDOWN_GRACE_SECS'
              value: string(batchGraceSeconds)
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
              value: 'ClientId=${workerIdentityClientId};Authorization=AAD'
            }
          ]
          probes: [
            {
              // Loading the model (and CUDA) takes a while on a cold GPU: allow 5 minutes
              // (Container Apps caps failureThreshold at 10).
              type: 'Startup'
              tcpSocket: {
                port: 8080
              }
              periodSeconds: 30
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
        maxReplicas: maxWorkers
        // Seconds between queue polls, and before the last replica goes after the queue drains.
        pollingInterval: 15
        cooldownPeriod: idleSeconds
        rules: [
          {
            name: 'batches-backlog'
            custom: {
              type: 'azure-servicebus'
              metadata: {
                queueName: 'batches'
                namespace: namespaceName
                messageCount: string(batchesPerWorker)
                activationMessageCount: string(activationBatches)
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
resource restartAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = if (!empty(workerImage)) {
  name: '${appName}-restarts'
  location: 'global'
  tags: tags
  properties: {
    description: 'A worker container restarted (crash, out of memory, or a failed liveness probe): its batch returns to the queue after the lock expires. See ContainerAppSystemLogs and ContainerAppConsoleLogs.'
    severity: 2
    enabled: true
    scopes: [
      worker.id
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

@description('Name of the environment.')
output environmentName string = managedEnvironment.name

@description('Resource id of the environment (the aggregator runs there too).')
output environmentId string = managedEnvironment.id

@description('Name of the worker app (empty until a worker image is given).')
output appName string = empty(workerImage) ? '' : appName
