// One role assignment on the Application Insights component (Monitoring Metrics Publisher,
// which local-auth-disabled ingestion requires).

@description('Application Insights component the role is granted on.')
param insightsName string

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

resource insights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: insightsName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, principalId, roleId)
  scope: insights
  properties: {
    principalId: principalId
    principalType: principalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
  }
}
