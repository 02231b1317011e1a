// Two storage accounts, as the reference architecture asks.
//
// - data: what users touch. Containers input, output, styles, jobs. Outside users reach it
//   only through short-lived single-blob SAS URLs minted with a user delegation key.
// - system: what must stay out of their reach: logs, the Functions package and host state,
//   undeliverable events, archived diagnostics. Reached by the compute through its private
//   endpoint (private-link.bicep); its public endpoint admits only trusted Azure services and
//   the operators' addresses.
//
// Both: Entra ID only (shared keys disabled, so no account key or key-signed SAS works),
// TLS 1.2, HTTPS only, no anonymous blob access, infrastructure encryption.

@description('Region of the accounts.')
param location string

@description('Name of the data account (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param dataAccountName string

@description('Name of the system account (3-24 lowercase letters and digits).')
@minLength(3)
@maxLength(24)
param systemAccountName string

@description('Public IPv4 addresses or ranges (CIDR, /30 or wider) admitted to the system account, for operators reading logs. A single address may be written with or without /32.')
param operatorIpRanges array

@description('Days deleted blobs and containers stay recoverable.')
@minValue(1)
@maxValue(365)
param softDeleteDays int

@description('Days the intermediate files of a job (jobs/) are kept.')
@minValue(1)
param jobRetentionDays int

@description('Days logs and archived diagnostics are kept in the system account.')
@minValue(1)
param logRetentionDays int

@description('Log Analytics workspace for the blob access logs.')
param workspaceId string

@description('Tags for every resource.')
param tags object

var dataContainers = [
  'input'
  'output'
  'styles'
  'jobs'
]

var systemContainers = [
  'logs'
  'function-packages'
  'eventgrid-deadletter'
]

resource data 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35:Outside users upload and download with SAS URLs from anywhere, so the data account cannot default-deny networks; every request still needs an Entra ID token or a user delegation SAS scoped to one blob.
  // checkov:skip=CKV_AZURE_59:Same reason as CKV_AZURE_35: public endpoint is how SAS holders reach input/ and output/. Shared keys and anonymous access are disabled.
  // checkov:skip=CKV_AZURE_206:Zone-redundant (ZRS) already survives a zone outage; a second region would double the storage bill for videos users can upload again and results the fleet can recompute.
  // checkov:skip=CKV_AZURE_43:The name is a parameter (checkov cannot evaluate it); main.bicep computes it as take(toLower(prefix) + 'data' + uniqueString(...), 24), lowercase letters and digits within 24 characters.
  name: dataAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    // Zone-redundant: a zone outage loses no input or result; geo-replication is not worth
    // doubling the bill for data that users can upload again.
    name: 'Standard_ZRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource dataBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: data
  name: 'default'
  properties: {
    // Soft delete: an overwritten or deleted input, style or result can be recovered.
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource dataContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for container in dataContainers: {
  parent: dataBlobs
  name: container
  properties: {
    publicAccess: 'None'
  }
}]

// Styled chunks and markers are only needed until the output exists (and for a while after,
// to find a finished job again); the output itself is never expired here.
resource dataLifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: data
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          enabled: true
          name: 'expire-job-files'
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                'jobs/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: jobRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    dataContainer
  ]
}

resource system 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_206:Logs, packages and dead-lettered events are rebuilt or re-sent, and ZRS already survives a zone outage; geo-replication would only double their cost.
  // checkov:skip=CKV_AZURE_43:The name is a parameter (checkov cannot evaluate it); main.bicep computes it as take(toLower(prefix) + 'sys' + uniqueString(...), 24), lowercase letters and digits within 24 characters.
  // checkov:skip=CKV_AZURE_59:Public network access stays enabled only so the firewall can admit trusted Azure services (Event Grid dead-lettering, diagnostics) and the operators' addresses; the default action is Deny, and the compute comes in through the private endpoint.
  name: systemAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_ZRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Deny'
      // Trusted services: Event Grid dead-lettering and diagnostic settings, with their own identities.
      bypass: 'AzureServices, Logging, Metrics'
      // The compute reaches this account through its private endpoint, which the firewall
      // does not filter; no subnet needs a rule.
      virtualNetworkRules: []
      // The storage firewall rejects /31 and /32 prefixes: a single address must be given
      // bare. A /32 is stripped here; a /31 fails the deployment (deploy.sh refuses it first:
      // give its two addresses instead).
      ipRules: [for range in operatorIpRanges: {
        value: endsWith(range, '/32') ? replace(range, '/32', '') : range
        action: 'Allow'
      }]
    }
    encryption: {
      keySource: 'Microsoft.Storage'
      requireInfrastructureEncryption: true
      services: {
        blob: {
          enabled: true
          keyType: 'Account'
        }
        file: {
          enabled: true
          keyType: 'Account'
        }
      }
    }
  }
}

resource systemBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: system
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: softDeleteDays
    }
  }
}

resource systemContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for container in systemContainers: {
  parent: systemBlobs
  name: container
  properties: {
    publicAccess: 'None'
  }
}]

resource systemLifecycle 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = {
  parent: system
  name: 'default'
  properties: {
    policy: {
      rules: [
        {
          enabled: true
          name: 'expire-logs'
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
                'appendBlob'
              ]
              // Our own logs, and the insights-logs-* containers that diagnostic settings archive into.
              prefixMatch: [
                'logs/'
                'insights-logs-'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: logRetentionDays
                }
              }
            }
          }
        }
      ]
    }
  }
  dependsOn: [
    systemContainer
  ]
}

// Who read, wrote or deleted which blob in the data account, SAS holders included.
resource dataBlobAudit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit'
  scope: dataBlobs
  properties: {
    workspaceId: workspaceId
    storageAccountId: system.id
    logs: [
      {
        category: 'StorageRead'
        enabled: true
      }
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

resource systemBlobAudit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit'
  scope: systemBlobs
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'StorageWrite'
        enabled: true
      }
      {
        category: 'StorageDelete'
        enabled: true
      }
    ]
  }
}

@description('Name of the data account.')
output dataAccountName string = data.name

@description('Resource id of the data account (the Event Grid source).')
output dataAccountId string = data.id

@description('Name of the system account.')
output systemAccountName string = system.name

@description('Resource id of the system account.')
output systemAccountId string = system.id
