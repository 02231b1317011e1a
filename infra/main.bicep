// stylefleet on Azure: two storage accounts, Service Bus, the Event Grid trigger, the Functions
// app (splitter), the GPU worker fleet, the aggregator (a CPU container consuming stitch),
// identities, roles and monitoring.
// Deploy into a resource group; infra/README.md walks through it.

targetScope = 'resourceGroup'

@description('Lowercase letters and digits, 3 to 10 characters: the start of every resource name.')
@minLength(3)
@maxLength(10)
param prefix string = 'stylefleet'

@description('Region of every resource; it must offer Flex Consumption and Container Apps serverless GPUs.')
param location string = resourceGroup().location

@description('Worker image in the registry as repository:tag (stylefleet-worker:cuda-0.1.0). Empty on the first deployment, before the image is pushed: the worker app is then not created.')
param workerImage string = ''

@description('Aggregator image in the registry as repository:tag (stylefleet-aggregator:0.1.0, built from functions/Dockerfile with --target aggregator). Empty on the first deployment: the aggregator app is then not created.')
param aggregatorImage string = ''

@description('Where workers run: a serverless T4 or A100 GPU, or CPU-only consumption replicas (slow; for regions or quotas without GPUs).')
@allowed([
  'gpu-t4'
  'gpu-a100'
  'cpu'
])
param workerCompute string = 'gpu-t4'

@description('When workerCompute changes: the previous value, so the environment keeps the old GPU profile until the worker app has moved off it. deploy.sh sets it and then deploys once more without it; none otherwise.')
@allowed([
  'none'
  'gpu-t4'
  'gpu-a100'
  'cpu'
])
param previousWorkerCompute string = 'none'

@description('Most worker replicas at once; each holds one GPU. Bounds the bill under a flood of uploads.')
@minValue(1)
@maxValue(100)
param maxWorkers int = 10

@description('Waiting batches per worker replica (KEDA messageCount).')
@minValue(1)
@maxValue(100)
param batchesPerWorker int = 4

@description('Waiting batches that wake the first worker from zero (KEDA activationMessageCount); 0 wakes on the first one.')
@minValue(0)
@maxValue(100)
param activationBatches int = 0

@description('Seconds a stopping worker may spend finishing its batch; it must cover one batch on the chosen compute.')
@minValue(30)
@maxValue(570)
param batchGraceSeconds int = 240

@description('Seconds the last worker stays up after the queue drains. Scale-to-zero pays a cold start (image pull, CUDA, model load) per job; when jobs arrive minutes apart, a longer idle time is cheaper.')
@minValue(60)
@maxValue(3600)
param idleSeconds int = 300

@description('Most aggregator replicas at once; each stitches one job at a time on CPU.')
@minValue(1)
@maxValue(30)
param maxAggregators int = 4

@description('Seconds a stopping aggregator may spend finishing its stitch; it must cover the longest stitch, or a cut-off stitch is redone by another replica.')
@minValue(30)
@maxValue(570)
param stitchGraceSeconds int = 300

@description('Create the Event Grid subscription that calls the splitter. Leave false until the functions package is published: Event Grid checks that the function exists.')
param subscribeSplitter bool = false

@description('Object id of the operator (user, group or service principal) who mints SAS URLs, replays dead letters and reads logs; empty grants nobody.')
param operatorPrincipalId string = ''

@description('Kind of the operator principal.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('Public IPv4 addresses (bare, or with /32, which is stripped) or ranges (CIDR, /30 or wider) from which operators read the system account; the compute (through its private endpoint) and trusted Azure services are always admitted. Azure Storage refuses /31.')
param operatorIpRanges array = []

@description('Days deleted blobs and containers stay recoverable.')
@minValue(1)
@maxValue(365)
param softDeleteDays int = 7

@description('Days the intermediate files of a job (jobs/) are kept.')
@minValue(1)
param jobRetentionDays int = 30

@description('Days logs are kept in Log Analytics and in the system account.')
@minValue(30)
@maxValue(730)
param logRetentionDays int = 30

@description('Email address told of every alert (dead letters, Event Grid delivery failures and dead-lettered events, failed splitter invocations, container restarts); empty: the alerts fire into an action group without a receiver.')
param alertEmail string = ''

@description('Tags for every resource.')
param tags object = {
  application: 'stylefleet'
}

var suffix = uniqueString(resourceGroup().id, prefix)

// Storage account and registry names allow lowercase letters and digits only.
var compactPrefix = toLower(prefix)

var names = {
  dataAccount: take('${compactPrefix}data${suffix}', 24)
  systemAccount: take('${compactPrefix}sys${suffix}', 24)
  serviceBus: '${prefix}-bus-${suffix}'
  registry: take('${compactPrefix}acr${suffix}', 50)
  workspace: '${prefix}-logs-${suffix}'
  insights: '${prefix}-insights-${suffix}'
  vnet: '${prefix}-vnet'
  environment: '${prefix}-env'
  worker: '${prefix}-worker'
  aggregator: '${prefix}-aggregator'
  plan: '${prefix}-plan-${suffix}'
  functionApp: '${prefix}-fn-${suffix}'
  topic: '${prefix}-data-events'
}

module network 'modules/network.bicep' = {
  name: 'network'
  params: {
    location: location
    name: names.vnet
    tags: tags
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    workspaceName: names.workspace
    insightsName: names.insights
    retentionDays: logRetentionDays
    alertEmail: alertEmail
    tags: tags
  }
}

module identities 'modules/identities.bicep' = {
  name: 'identities'
  params: {
    location: location
    prefix: prefix
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    dataAccountName: names.dataAccount
    systemAccountName: names.systemAccount
    operatorIpRanges: operatorIpRanges
    softDeleteDays: softDeleteDays
    jobRetentionDays: jobRetentionDays
    logRetentionDays: logRetentionDays
    workspaceId: monitoring.outputs.workspaceId
    tags: tags
  }
}

// The compute reaches both accounts through private endpoints (the Functions subnet may carry no
// service endpoint); the zone resolves the accounts' blob names to them inside the network.
module privateLink 'modules/private-link.bicep' = {
  name: 'private-link'
  params: {
    location: location
    vnetId: network.outputs.vnetId
    subnetId: network.outputs.endpointsSubnetId
    accounts: [
      {
        name: storage.outputs.dataAccountName
        id: storage.outputs.dataAccountId
      }
      {
        name: storage.outputs.systemAccountName
        id: storage.outputs.systemAccountId
      }
    ]
    tags: tags
  }
}

module serviceBus 'modules/servicebus.bicep' = {
  name: 'service-bus'
  params: {
    location: location
    namespaceName: names.serviceBus
    workspaceId: monitoring.outputs.workspaceId
    actionGroupId: monitoring.outputs.actionGroupId
    tags: tags
  }
}

module registry 'modules/registry.bicep' = {
  name: 'registry'
  params: {
    location: location
    registryName: names.registry
    workspaceId: monitoring.outputs.workspaceId
    tags: tags
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    dataAccountName: storage.outputs.dataAccountName
    systemAccountName: storage.outputs.systemAccountName
    namespaceName: serviceBus.outputs.namespaceName
    registryName: registry.outputs.registryName
    insightsName: monitoring.outputs.insightsName
    principalIds: identities.outputs.principalIds
    operatorPrincipalId: operatorPrincipalId
    operatorPrincipalType: operatorPrincipalType
  }
}

module functions 'modules/functions.bicep' = {
  name: 'functions'
  params: {
    location: location
    planName: names.plan
    appName: names.functionApp
    identityId: identities.outputs.ids.functions
    identityClientId: identities.outputs.clientIds.functions
    dataAccountName: storage.outputs.dataAccountName
    systemAccountName: storage.outputs.systemAccountName
    namespaceName: serviceBus.outputs.namespaceName
    insightsName: monitoring.outputs.insightsName
    workspaceId: monitoring.outputs.workspaceId
    subnetId: network.outputs.functionsSubnetId
    actionGroupId: monitoring.outputs.actionGroupId
    tags: tags
  }
  // The host must find its storage authorised, and reachable through the private endpoint,
  // when it first starts.
  dependsOn: [
    roles
    privateLink
  ]
}

module workers 'modules/workers.bicep' = {
  name: 'workers'
  params: {
    location: location
    environmentName: names.environment
    appName: names.worker
    subnetId: network.outputs.workersSubnetId
    workerImage: workerImage
    registryLoginServer: registry.outputs.loginServer
    workerCompute: workerCompute
    previousWorkerCompute: previousWorkerCompute
    maxWorkers: maxWorkers
    batchesPerWorker: batchesPerWorker
    activationBatches: activationBatches
    batchGraceSeconds: batchGraceSeconds
    idleSeconds: idleSeconds
    workerIdentityId: identities.outputs.ids.worker
    workerIdentityClientId: identities.outputs.clientIds.worker
    scalerIdentityId: identities.outputs.ids.scaler
    pullIdentityId: identities.outputs.ids.pull
    dataAccountName: storage.outputs.dataAccountName
    systemAccountName: storage.outputs.systemAccountName
    namespaceName: serviceBus.outputs.namespaceName
    workspaceId: monitoring.outputs.workspaceId
    systemAccountId: storage.outputs.systemAccountId
    actionGroupId: monitoring.outputs.actionGroupId
    insightsName: monitoring.outputs.insightsName
    tags: tags
  }
  // Image pull and KEDA need their roles, and the worker its storage path, before the first
  // revision starts.
  dependsOn: [
    roles
    privateLink
  ]
}

module aggregator 'modules/aggregator.bicep' = {
  name: 'aggregator'
  params: {
    location: location
    appName: names.aggregator
    environmentId: workers.outputs.environmentId
    aggregatorImage: aggregatorImage
    registryLoginServer: registry.outputs.loginServer
    maxAggregators: maxAggregators
    stitchGraceSeconds: stitchGraceSeconds
    stitchMaxDeliveries: serviceBus.outputs.stitchMaxDeliveries
    aggregatorIdentityId: identities.outputs.ids.aggregator
    aggregatorIdentityClientId: identities.outputs.clientIds.aggregator
    scalerIdentityId: identities.outputs.ids.scaler
    pullIdentityId: identities.outputs.ids.pull
    dataAccountName: storage.outputs.dataAccountName
    systemAccountName: storage.outputs.systemAccountName
    namespaceName: serviceBus.outputs.namespaceName
    actionGroupId: monitoring.outputs.actionGroupId
    insightsName: monitoring.outputs.insightsName
    tags: tags
  }
  // Image pull, KEDA and the aggregator's own queue and storage access need their roles first.
  dependsOn: [
    roles
    privateLink
  ]
}

module events 'modules/events.bicep' = {
  name: 'events'
  params: {
    location: location
    topicName: names.topic
    dataAccountId: storage.outputs.dataAccountId
    systemAccountId: storage.outputs.systemAccountId
    identityId: identities.outputs.ids.events
    functionAppId: functions.outputs.appId
    subscribe: subscribeSplitter
    workspaceId: monitoring.outputs.workspaceId
    actionGroupId: monitoring.outputs.actionGroupId
    tags: tags
  }
  dependsOn: [
    roles
  ]
}

@description('STYLEFLEET_STORE: the data account URL.')
output storeUrl string = 'https://${storage.outputs.dataAccountName}.blob.${environment().suffixes.storage}'

@description('STYLEFLEET_LOG_STORE: the system account URL.')
output logStoreUrl string = 'https://${storage.outputs.systemAccountName}.blob.${environment().suffixes.storage}'

@description('STYLEFLEET_QUEUE: the Service Bus namespace.')
output queueUrl string = 'servicebus://${serviceBus.outputs.namespaceName}.servicebus.windows.net'

@description('Name of the data account.')
output dataAccountName string = storage.outputs.dataAccountName

@description('Name of the system account.')
output systemAccountName string = storage.outputs.systemAccountName

@description('Name of the Service Bus namespace.')
output serviceBusNamespace string = serviceBus.outputs.namespaceName

@description('Name of the container registry (for az acr build).')
output registryName string = registry.outputs.registryName

@description('Name of the function app (for publishing the handler).')
output functionAppName string = functions.outputs.appName

@description('Name of the Container Apps environment.')
output environmentName string = workers.outputs.environmentName

@description('Name of the worker app; empty until workerImage is given.')
output workerAppName string = workers.outputs.appName

@description('Name of the aggregator app; empty until aggregatorImage is given.')
output aggregatorAppName string = aggregator.outputs.appName

@description('Name of the Log Analytics workspace.')
output workspaceName string = names.workspace
