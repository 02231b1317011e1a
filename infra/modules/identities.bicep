// One user-assigned identity per component, so that each gets only its own roles
// (granted in roles.bicep) and none of them holds a key or a connection string.

@description('Region of the identities.')
param location string

@description('Prefix of every resource name.')
param prefix string

@description('Tags for every resource.')
param tags object

// The Functions app: the splitter.
resource functions 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${prefix}-id-functions'
  location: location
  tags: tags
}

// The worker containers: the only identity the worker code can obtain tokens for.
resource worker 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${prefix}-id-worker'
  location: location
  tags: tags
}

// The aggregator containers (stitch consumer): the only identity the aggregator code can use.
resource aggregator 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${prefix}-id-aggregator'
  location: location
  tags: tags
}

// KEDA reads the queue lengths (batches for the workers, stitch for the aggregator) with it. Reading runtime properties needs the Manage right,
// so this identity is kept away from the containers (lifecycle None) and scoped to those queues.
resource scaler 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${prefix}-id-scaler'
  location: location
  tags: tags
}

// The platform pulls worker images with it; the containers never see it.
resource pull 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${prefix}-id-pull'
  location: location
  tags: tags
}

// The Event Grid system topic writes undeliverable events to the system account with it.
resource events 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${prefix}-id-events'
  location: location
  tags: tags
}

@description('Resource ids of the identities.')
output ids object = {
  functions: functions.id
  worker: worker.id
  aggregator: aggregator.id
  scaler: scaler.id
  pull: pull.id
  events: events.id
}

@description('Principal (object) ids of the identities, for role assignments.')
output principalIds object = {
  functions: functions.properties.principalId
  worker: worker.properties.principalId
  aggregator: aggregator.properties.principalId
  scaler: scaler.properties.principalId
  pull: pull.properties.principalId
  events: events.properties.principalId
}

@description('Client ids of the identities the code signs in with (AZURE_CLIENT_ID).')
output clientIds object = {
  functions: functions.properties.clientId
  worker: worker.properties.clientId
  aggregator: aggregator.properties.clientId
}
