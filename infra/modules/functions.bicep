// The Azure Functions app that hosts the splitter (Event Grid trigger): Flex Consumption, the
// custom handler stylefleet-functions, one user-assigned identity, identity-based connections
// only. The aggregator is not a function (a custom handler cannot dead-letter its message): it
// runs as a stitch-queue consumer in aggregator.bicep.

@description('Region of the app.')
param location string

@description('Name of the Flex Consumption plan.')
param planName string

@description('Name of the function app (globally unique host name).')
param appName string

@description('Resource id of the functions identity.')
param identityId string

@description('Client id of the functions identity.')
param identityClientId string

@description('Name of the data account.')
param dataAccountName string

@description('Name of the system account (host storage, package, logs).')
param systemAccountName string

@description('Name of the Service Bus namespace.')
param namespaceName string

@description('Name of the Application Insights component.')
param insightsName string

@description('Log Analytics workspace for the function logs.')
param workspaceId string

@description('Subnet the app integrates with.')
param subnetId string

@description('Most instances the app scales out to (Flex Consumption allows 40 to 1000).')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('RUST_LOG filter for the handler.')
param rustLog string = 'info'

@description('Action group the alerts notify.')
param actionGroupId string

@description('Tags for every resource.')
param tags object

var storageSuffix = environment().suffixes.storage

resource insights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: insightsName
}

resource system 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: systemAccountName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:A zone outage only delays work: Event Grid retries the splitter for 24 hours, so zone-redundant always-ready capacity would be paid for idle.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222:Event Grid delivers BlobCreated events to the splitter over the public endpoint (it authenticates with the Event Grid extension key); the app exposes no HTTP function.
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales per event by itself, from zero; a minimum instance count would only add idle cost.
  // checkov:skip=CKV_AZURE_213:Health checks route HTTP load balancing between instances; the one trigger here is Event Grid's push to the splitter, which Event Grid retries itself.
  // checkov:skip=CKV_AZURE_17:Client certificates apply to HTTP callers; Event Grid does not present one.
  name: appName
  location: location
  tags: tags
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    virtualNetworkSubnetId: subnetId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${system.properties.primaryEndpoints.blob}function-packages'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: 2048
      }
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: [
        // Host storage: the system account, reached with the app identity.
        {
          name: 'AzureWebJobsStorage__accountName'
          value: systemAccountName
        }
        {
          name: 'AzureWebJobsStorage__credential'
          value: 'managedidentity'
        }
        {
          name: 'AzureWebJobsStorage__clientId'
          value: identityClientId
        }
        // What stylefleet-functions reads.
        {
          name: 'STYLEFLEET_STORE'
          value: 'https://${dataAccountName}.blob.${storageSuffix}'
        }
        {
          name: 'STYLEFLEET_LOG_STORE'
          value: 'https://${systemAccountName}.blob.${storageSuffix}'
        }
        {
          name: 'STYLEFLEET_QUEUE'
          value: 'servicebus://${namespaceName}.servicebus.windows.net'
        }
        {
          name: 'AZURE_CLIENT_ID'
          value: identityClientId
        }
        {
          name: 'RUST_LOG'
          value: rustLog
        }
        // Telemetry. The connection string only names the component (it is not a secret, and
        // local auth is disabled on it); the host authenticates with the app identity.
        {
          name: 'APPLICATIONINSIGHTS_CONNECTION_STRING'
          value: insights.properties.ConnectionString
        }
        {
          name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING'
          value: 'ClientId=${identityClientId};Authorization=AAD'
        }
      ]
    }
  }
}

// Publishing goes through Entra ID (az functionapp deploy, func publish); no FTP or SCM passwords.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

resource diagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'logs'
  scope: app
  properties: {
    workspaceId: workspaceId
    storageAccountId: system.id
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
  }
}

// A failed splitter invocation (the Functions host records each one as a failed request in
// Application Insights). Event Grid retries it, so one failure is not yet a lost upload, but a
// splitter that keeps failing shows here first.
resource failureAlert 'Microsoft.Insights/metricAlerts@2018-03-01' = {
  name: '${appName}-failures'
  location: 'global'
  tags: tags
  properties: {
    description: 'The splitter function failed (Event Grid retries it): see FunctionAppLogs and the traces in Application Insights.'
    severity: 2
    enabled: true
    scopes: [
      insights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      'odata.type': 'Microsoft.Azure.Monitor.SingleResourceMultipleMetricCriteria'
      allOf: [
        {
          name: 'failed-invocations'
          metricNamespace: 'microsoft.insights/components'
          metricName: 'requests/failed'
          operator: 'GreaterThan'
          threshold: 0
          timeAggregation: 'Count'
          criterionType: 'StaticThresholdCriterion'
        }
      ]
    }
    actions: [
      {
        actionGroupId: actionGroupId
      }
    ]
  }
}

@description('Resource id of the function app.')
output appId string = app.id

@description('Name of the function app.')
output appName string = app.name
