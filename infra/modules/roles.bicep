// Who may do what: the whole access matrix of the deployment in one place.
//
// Every grant is a data-plane role at the narrowest scope Azure allows (a blob container, a
// queue), except Storage Blob Delegator (account-wide by definition) and the Functions host's
// own storage (it creates its containers). Nothing here is a key or a connection string.
//
// | identity   | data account                                   | system account            | Service Bus                               | other             |
// |------------|------------------------------------------------|---------------------------|-------------------------------------------|-------------------|
// | functions  | read input, styles; write jobs                 | Blob Data Owner (host)    | send + receive batches and stitch (revive)| publish telemetry |
// | worker     | read input, styles; write jobs                 | write logs                | receive batches; send stitch              |                   |
// | aggregator | read input; write jobs, output                 | write logs                | receive stitch (settle, dead-letter)      |                   |
// | scaler     |                                                |                           | Data Owner on batches, stitch (KEDA)      |                   |
// | pull       |                                                |                           |                                 | AcrPull           |
// | events     |                                                | write eventgrid-deadletter|                                 |                   |
// | operator   | delegate SAS; write input, styles; read jobs, output | read logs          | send + receive both (replay)              |                   |

@description('Name of the data account.')
param dataAccountName string

@description('Name of the system account.')
param systemAccountName string

@description('Name of the Service Bus namespace.')
param namespaceName string

@description('Name of the container registry.')
param registryName string

@description('Name of the Application Insights component.')
param insightsName string

@description('Principal ids of the component identities (functions, worker, aggregator, scaler, pull, events).')
param principalIds object

@description('Object id of the operator; empty for none.')
param operatorPrincipalId string

@description('Kind of the operator principal.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string

// Built-in role definition ids (the same in every tenant).
var role = {
  blobReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  blobContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  blobOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  blobDelegator: 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a'
  busSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  busReceiver: '4f6d3b9b-027b-4f4c-9142-0e5a2a2247e0'
  busOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  metricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

var containerGrants = [
  // The splitter reads the upload (and a user style image) and writes the plan under jobs/
  // (and clears a failed job's failure records when it revives it). It never writes output/.
  {
    who: 'functions'
    account: dataAccountName
    container: 'input'
    role: role.blobReader
  }
  {
    who: 'functions'
    account: dataAccountName
    container: 'styles'
    role: role.blobReader
  }
  {
    who: 'functions'
    account: dataAccountName
    container: 'jobs'
    role: role.blobContributor
  }
  // A worker reads its frames and style and writes its chunk and done marker; it never sees output/.
  {
    who: 'worker'
    account: dataAccountName
    container: 'input'
    role: role.blobReader
  }
  {
    who: 'worker'
    account: dataAccountName
    container: 'styles'
    role: role.blobReader
  }
  {
    who: 'worker'
    account: dataAccountName
    container: 'jobs'
    role: role.blobContributor
  }
  {
    who: 'worker'
    account: systemAccountName
    container: 'logs'
    role: role.blobContributor
  }
  // The aggregator reads the manifest, done markers, chunks and the source (for its audio),
  // writes the status, claims and the one output, and its per-job log. It never sees styles/.
  {
    who: 'aggregator'
    account: dataAccountName
    container: 'input'
    role: role.blobReader
  }
  {
    who: 'aggregator'
    account: dataAccountName
    container: 'jobs'
    role: role.blobContributor
  }
  {
    who: 'aggregator'
    account: dataAccountName
    container: 'output'
    role: role.blobContributor
  }
  {
    who: 'aggregator'
    account: systemAccountName
    container: 'logs'
    role: role.blobContributor
  }
  {
    who: 'events'
    account: systemAccountName
    container: 'eventgrid-deadletter'
    role: role.blobContributor
  }
]

var queueGrants = [
  // The splitter posts a job's batches, re-posts the stitch of a job whose batches are all done,
  // and revives a failed job by replaying its dead letters (receive from the dead-letter
  // subqueue, send again): sender and receiver on both queues.
  {
    who: 'functions'
    queue: 'batches'
    role: role.busSender
  }
  {
    who: 'functions'
    queue: 'batches'
    role: role.busReceiver
  }
  {
    who: 'functions'
    queue: 'stitch'
    role: role.busSender
  }
  {
    who: 'functions'
    queue: 'stitch'
    role: role.busReceiver
  }
  {
    who: 'worker'
    queue: 'batches'
    role: role.busReceiver
  }
  {
    who: 'worker'
    queue: 'stitch'
    role: role.busSender
  }
  // Receive covers everything the aggregator does to its message: lock renewal, complete,
  // abandon and dead-letter with a reason. It sends nothing.
  {
    who: 'aggregator'
    queue: 'stitch'
    role: role.busReceiver
  }
  // KEDA reads the active message count through the management API, which needs Manage: on
  // batches for the workers, on stitch for the aggregator.
  {
    who: 'scaler'
    queue: 'batches'
    role: role.busOwner
  }
  {
    who: 'scaler'
    queue: 'stitch'
    role: role.busOwner
  }
]

var operatorContainerGrants = [
  {
    account: dataAccountName
    container: 'input'
    role: role.blobContributor
  }
  {
    account: dataAccountName
    container: 'styles'
    role: role.blobContributor
  }
  {
    account: dataAccountName
    container: 'jobs'
    role: role.blobReader
  }
  {
    account: dataAccountName
    container: 'output'
    role: role.blobReader
  }
  {
    account: systemAccountName
    container: 'logs'
    role: role.blobReader
  }
]

// Replaying a dead letter is receive (from the dead-letter subqueue) plus send.
var operatorQueueGrants = [
  {
    queue: 'batches'
    role: role.busSender
  }
  {
    queue: 'batches'
    role: role.busReceiver
  }
  {
    queue: 'stitch'
    role: role.busSender
  }
  {
    queue: 'stitch'
    role: role.busReceiver
  }
]

var hasOperator = !empty(operatorPrincipalId)

module onContainer 'role-container.bicep' = [for (grant, i) in containerGrants: {
  name: 'role-${grant.who}-${grant.container}-${i}'
  params: {
    accountName: grant.account
    containerName: grant.container
    principalId: principalIds[grant.who]
    roleId: grant.role
  }
}]

module onQueue 'role-queue.bicep' = [for (grant, i) in queueGrants: {
  name: 'role-${grant.who}-${grant.queue}-${i}'
  params: {
    namespaceName: namespaceName
    queueName: grant.queue
    principalId: principalIds[grant.who]
    roleId: grant.role
  }
}]

// The Functions host keeps its leases, keys and deployment package in the system account and
// creates its own containers there; Microsoft documents Blob Data Owner for host storage.
module functionsHostStorage 'role-account.bicep' = {
  name: 'role-functions-host-storage'
  params: {
    accountName: systemAccountName
    principalId: principalIds.functions
    roleId: role.blobOwner
  }
}

module functionsTelemetry 'role-insights.bicep' = {
  name: 'role-functions-telemetry'
  params: {
    insightsName: insightsName
    principalId: principalIds.functions
    roleId: role.metricsPublisher
  }
}

module pullImages 'role-registry.bicep' = {
  name: 'role-pull-registry'
  params: {
    registryName: registryName
    principalId: principalIds.pull
    roleId: role.acrPull
  }
}

// A user delegation SAS never grants more than its signer holds, so the operator's container
// roles above bound every URL it mints; the delegator role only lets it request the key.
module operatorDelegates 'role-account.bicep' = if (hasOperator) {
  name: 'role-operator-delegator'
  params: {
    accountName: dataAccountName
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleId: role.blobDelegator
  }
}

module operatorOnContainer 'role-container.bicep' = [for (grant, i) in operatorContainerGrants: if (hasOperator) {
  name: 'role-operator-${grant.container}-${i}'
  params: {
    accountName: grant.account
    containerName: grant.container
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleId: grant.role
  }
}]

module operatorOnQueue 'role-queue.bicep' = [for (grant, i) in operatorQueueGrants: if (hasOperator) {
  name: 'role-operator-${grant.queue}-${i}'
  params: {
    namespaceName: namespaceName
    queueName: grant.queue
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleId: grant.role
  }
}]
