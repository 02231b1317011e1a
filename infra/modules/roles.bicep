// Every role assignment of the deployment, created from the access matrix in infra/access.json:
// the single source of who may do what. The tests run each component behind a guard that reads
// the same file and refuses what it does not grant, so the Bicep and the tests cannot drift apart.
//
// In short (access.json has each grant with its reason):
// - functions:  read input, styles; write jobs; Blob Data Owner on the system account (host
//               storage); send and receive batches and stitch (revive); publish telemetry
// - worker:     read input, styles; write jobs, logs; receive and send batches; send stitch
// - aggregator: read input; write jobs, output, logs; receive stitch
// - scaler:     Data Owner on batches and stitch (KEDA reads the counts); pull: AcrPull
// - events:     write eventgrid-deadletter
// - operator:   delegate SAS; write input, styles, jobs (dlq replay clears failure records);
//               read output, logs; send and receive both queues (dlq replay) - only when an
//               operator is given
//
// Data-plane roles only, at the narrowest scope Azure allows (a container, a queue); account
// scope only where Azure requires it (Storage Blob Delegator, the Functions host's storage).

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

var matrix = loadJsonContent('../access.json')

var hasOperator = !empty(operatorPrincipalId)

// Who (as access.json names them) is which principal; the operator only when one is given.
var principals = union(principalIds, {
  operator: operatorPrincipalId
})

// Managed identities are service principals; the operator may be a user or a group.
var principalTypes = {
  functions: 'ServicePrincipal'
  worker: 'ServicePrincipal'
  aggregator: 'ServicePrincipal'
  scaler: 'ServicePrincipal'
  pull: 'ServicePrincipal'
  events: 'ServicePrincipal'
  operator: operatorPrincipalType
}

var accounts = {
  data: dataAccountName
  system: systemAccountName
}

module onContainer 'role-container.bicep' = [for (grant, i) in matrix.containers: if ((grant.who != 'operator') || hasOperator) {
  name: 'role-${grant.who}-${grant.container}-${i}'
  params: {
    accountName: accounts[grant.account]
    containerName: grant.container
    principalId: principals[grant.who]
    principalType: principalTypes[grant.who]
    roleId: matrix.roles[grant.role].id
  }
}]

module onAccount 'role-account.bicep' = [for (grant, i) in matrix.accounts: if ((grant.who != 'operator') || hasOperator) {
  name: 'role-${grant.who}-${grant.account}-account-${i}'
  params: {
    accountName: accounts[grant.account]
    principalId: principals[grant.who]
    principalType: principalTypes[grant.who]
    roleId: matrix.roles[grant.role].id
  }
}]

module onQueue 'role-queue.bicep' = [for (grant, i) in matrix.queues: if ((grant.who != 'operator') || hasOperator) {
  name: 'role-${grant.who}-${grant.queue}-${i}'
  params: {
    namespaceName: namespaceName
    queueName: grant.queue
    principalId: principals[grant.who]
    principalType: principalTypes[grant.who]
    roleId: matrix.roles[grant.role].id
  }
}]

// The resources access.json names: 'registry' (image pulls) and 'insights' (telemetry).
module onRegistry 'role-registry.bicep' = [for (grant, i) in matrix.resources: if ((grant.resource == 'registry') && ((grant.who != 'operator') || hasOperator)) {
  name: 'role-${grant.who}-registry-${i}'
  params: {
    registryName: registryName
    principalId: principals[grant.who]
    principalType: principalTypes[grant.who]
    roleId: matrix.roles[grant.role].id
  }
}]

module onInsights 'role-insights.bicep' = [for (grant, i) in matrix.resources: if ((grant.resource == 'insights') && ((grant.who != 'operator') || hasOperator)) {
  name: 'role-${grant.who}-insights-${i}'
  params: {
    insightsName: insightsName
    principalId: principals[grant.who]
    principalType: principalTypes[grant.who]
    roleId: matrix.roles[grant.role].id
  }
}]
