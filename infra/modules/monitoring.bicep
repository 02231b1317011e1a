// Log Analytics (every log and metric lands here) and a workspace-based Application Insights
// that reads and writes through the same workspace, so function traces, worker console logs,
// Service Bus and storage logs answer one query.

@description('Region of the workspace.')
param location string

@description('Name of the Log Analytics workspace.')
param workspaceName string

@description('Name of the Application Insights component.')
param insightsName string

@description('Days logs are kept in the workspace.')
@minValue(30)
@maxValue(730)
param retentionDays int

@description('Email address told of every alert; empty creates the action group without a receiver (add one later in the portal or redeploy with it).')
param alertEmail string = ''

@description('Tags for every resource.')
param tags object

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: workspaceName
  location: location
  tags: tags
  properties: {
    sku: {
      name: 'PerGB2018'
    }
    retentionInDays: retentionDays
    features: {
      // Writers authenticate with Entra ID (diagnostic settings, the Azure Monitor agent), never a workspace key.
      disableLocalAuth: true
    }
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: insightsName
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: workspace.id
    IngestionMode: 'LogAnalytics'
    // The connection string names the component but cannot write on its own: ingestion
    // needs an Entra ID token of an identity with Monitoring Metrics Publisher.
    DisableLocalAuth: true
  }
}

// Every alert of the deployment notifies this group: dead letters, Event Grid delivery failures
// and dead-lettered events, failed splitter invocations, restarting workers or aggregators.
resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${workspaceName}-alerts'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'stylefleet'
    enabled: true
    emailReceivers: empty(alertEmail) ? [] : [
      {
        name: 'operator'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

@description('Resource id of the action group every alert notifies.')
output actionGroupId string = actionGroup.id

@description('Resource id of the Log Analytics workspace.')
output workspaceId string = workspace.id

@description('Name of the Application Insights component.')
output insightsName string = insights.name

@description('Resource id of the Application Insights component.')
output insightsId string = insights.id
