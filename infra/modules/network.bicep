// The virtual network that keeps the compute private: the worker environment and the
// Functions app run in delegated subnets of their own, and both storage accounts have a private
// endpoint in a third subnet (private-link.bicep), which is how the compute reaches them.
//
// No subnet carries a service endpoint. Microsoft's Flex Consumption documentation says the
// subnet a function app integrates with can't be used for other purposes such as service
// endpoints, and its Flex Consumption VNet samples reach storage through a private endpoint
// and a private DNS zone instead; with that zone linked here, the workers' subnet resolves the
// accounts to the same private endpoints, so a service endpoint there would carry nothing.

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

resource endpointsNsg 'Microsoft.Network/networkSecurityGroups@2023-11-01' = {
  name: '${name}-endpoints'
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
          networkSecurityGroup: {
            id: workersNsg.id
          }
        }
      }
      {
        // Flex Consumption integrates through the same delegation as Container Apps, but may
        // not share a subnet with a Container Apps environment.
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
          networkSecurityGroup: {
            id: functionsNsg.id
          }
        }
      }
      {
        // The private endpoints of the two storage accounts (blob), nothing else.
        name: 'endpoints'
        properties: {
          addressPrefix: '10.40.3.0/27'
          privateEndpointNetworkPolicies: 'Disabled'
          networkSecurityGroup: {
            id: endpointsNsg.id
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

@description('Subnet of the storage private endpoints.')
output endpointsSubnetId string = '${vnet.id}/subnets/endpoints'

@description('Resource id of the virtual network (private DNS zones link to it).')
output vnetId string = vnet.id
