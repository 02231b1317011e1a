// One role assignment on one Service Bus queue (not the namespace), so a sender of batches
// cannot read stitch, and so on.

@description('Service Bus namespace that holds the queue.')
param namespaceName string

@description('Queue the role is granted on.')
param queueName string

@description('Principal (object) id that receives the role.')
param principalId string

@description('User, Group or ServicePrincipal (managed identities are ServicePrincipal).')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'ServicePrincipal'

@description('Id (GUID) of the built-in role definition.')
param roleId string

resource namespace 'Microsoft.ServiceBus/namespaces@2022-10-01-preview' existing = {
  name: namespaceName
}

resource queue 'Microsoft.ServiceBus/namespaces/queues@2022-10-01-preview' existing = {
  parent: namespace
  name: queueName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(queue.id, principalId, roleId)
  scope: queue
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
  }
}
