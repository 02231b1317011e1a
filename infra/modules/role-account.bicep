// One role assignment on a whole storage account, for the few roles that only work there
// (Storage Blob Delegator) or whose holder must create containers (the Functions host).

@description('Storage account the role is granted on.')
param accountName string

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

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, roleId)
  scope: account
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
  }
}
