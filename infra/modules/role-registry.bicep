// One role assignment on the container registry (AcrPull for the image-pull identity).

@description('Container registry the role is granted on.')
param registryName string

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

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' existing = {
  name: registryName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(registry.id, principalId, roleId)
  scope: registry
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
  }
}
