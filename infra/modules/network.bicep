// The virtual network that keeps the compute private: the worker environment and the
// Functions app run in delegated subnets, and the system storage account admits only these
// subnets (through service endpoints), trusted Azure services and the operators' addresses.

@description('Region of the network.')
param location string

@description('Name of the virtual network.')
param name string

@description('Tags for every resource.')
param tags object

// No inbound rules: nothing in either subnet serves traffic from outside. The default rules
// still allow traffic inside the network and outbound to Azure services.
resource workersNsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = {
  name: '${name}-workers'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource functionsNsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = {
  name: '${name}-functions'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2023-11-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        '10.40.0.0/16'
      ]
    }
    subnets: [
      {
        // A workload-profiles environment needs at least a /27; a /23 leaves room for many GPU replicas.
        name: 'workers'
        properties: {
          addressPrefix: '10.40.0.0/23'
          delegations: [
            {
              name: 'container-apps'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
          serviceEndpoints: [
            {
              service: 'Microsoft.Storage'
            }
          ]
          networkSecurityGroup: {
            id: workersNsg.id
          }
        }
      }
      {
        // Flex Consumption integrates through the same delegation as Container Apps.
        name: 'functions'
        properties: {
          addressPrefix: '10.40.2.0/24'
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
          serviceEndpoints: [
            {
              service: 'Microsoft.Storage'
            }
          ]
          networkSecurityGroup: {
            id: functionsNsg.id
          }
        }
      }
    ]
  }
}

@description('Subnet of the Container Apps environment.')
output workersSubnetId string = '${vnet.id}/subnets/workers'

@description('Subnet the Functions app integrates with.')
output functionsSubnetId string = '${vnet.id}/subnets/functions'
