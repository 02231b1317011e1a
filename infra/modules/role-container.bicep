// One role assignment on one blob container: the narrowest storage scope Azure RBAC offers.

@description('Storage account that holds the container.')
param accountName string

@description('Container the role is granted on.')
param containerName string

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

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: accountName
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: account
  name: 'default'
}

resource container 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobs
  name: containerName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(container.id, principalId, roleId)
  scope: container
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
  }
}
