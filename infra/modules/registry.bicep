// The container registry for the worker and aggregator images. No admin user and no anonymous pull: the
// Container App pulls with a platform-only identity that holds AcrPull, and operators push
// with their own Entra ID sign-in (az acr build or az acr login).

@description('Region of the registry.')
param location string

@description('Name of the registry (5-50 letters and digits).')
@minLength(5)
@maxLength(50)
param registryName string

@description('Log Analytics workspace for the registry audit logs.')
param workspaceId string

@description('Tags for every resource.')
param tags object

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  // checkov:skip=CKV_AZURE_139:Disabling public access needs the Premium tier and private endpoints for every pusher and puller; access needs an Entra ID identity with AcrPush or AcrPull, admin user and anonymous pull are off.
  // checkov:skip=CKV_AZURE_166:Quarantine (Premium) is for a scanning pipeline this project does not run; images are built from this repository by az acr build.
  // checkov:skip=CKV_AZURE_233:Zone redundancy (Premium) protects pulls during a zone outage, which the queue rides out anyway: batches wait and are retried.
  // checkov:skip=CKV_AZURE_163:Vulnerability scanning is Microsoft Defender for Containers, enabled per subscription, not in this template.
  name: registryName
  location: location
  tags: tags
  sku: {
    // Standard: 100 GiB holds several CUDA images (several GiB each); Basic's 10 GiB does not.
    name: 'Standard'
  }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    publicNetworkAccess: 'Enabled'
    zoneRedundancy: 'Disabled'
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: registry
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        categoryGroup: 'allLogs'
        enabled: true
      }
    ]
  }
}

@description('Name of the registry.')
output registryName string = registry.name

@description('Login server of the registry, e.g. name.azurecr.io.')
output loginServer string = registry.properties.loginServer
