// Private endpoints for the blob service of both storage accounts, in the network's endpoints
// subnet, and the private DNS zone privatelink.blob.<storage suffix> linked to the network, so
// that <account>.blob.core.windows.net resolves to the private endpoint inside it. This is how
// the Functions app (VNet integration, whose subnet may carry no service endpoint) and the
// Container Apps environment reach the system account, which denies every other network, and
// the data account.
//
// Blob only. The Functions host's storage needs no queue or table endpoint here: its one
// trigger is Event Grid (a webhook, no storage queue), and its identity holds blob roles only.

@description('Region of the private endpoints.')
param location string

@description('Resource id of the virtual network the DNS zone is linked to.')
param vnetId string

@description('Subnet that holds the private endpoints.')
param subnetId string

@description('The storage accounts to reach privately, as { name, id }.')
param accounts array

@description('Tags for every resource.')
param tags object

resource blobZone 'Microsoft.Network/privateDnsZones@2020-06-01' = {
  name: 'privatelink.blob.${environment().suffixes.storage}'
  location: 'global'
  tags: tags
  properties: {}
}

resource blobZoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = {
  parent: blobZone
  name: 'vnet'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnetId
    }
  }
}

resource endpoint 'Microsoft.Network/privateEndpoints@2023-11-01' = [for account in accounts: {
  name: '${account.name}-blob'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: 'blob'
        properties: {
          privateLinkServiceId: account.id
          groupIds: [
            'blob'
          ]
        }
      }
    ]
  }
}]

// The zone group writes (and removes) the endpoint's A record in the zone.
resource endpointDns 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2023-11-01' = [for (account, i) in accounts: {
  parent: endpoint[i]
  name: 'blob'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'blob'
        properties: {
          privateDnsZoneId: blobZone.id
        }
      }
    ]
  }
}]
