// The QLP deploy bot on Azure Container Apps: two replicas of `qlp-bot serve` on one PostgreSQL
// flexible server, a user-assigned managed identity holding the roles the bot needs (README,
// "Roles the bot's identity needs"; procedures/platforms/azure/roles.py), every secret a Key
// Vault reference. Deploy into the resource group of the container groups it manages:
//   az deployment group create -g prod-qlp-rg -f deploy/azure/main.bicep \
//     -p keyVaultName=prod-qlp-kv image=prodqlpacr.azurecr.io/qlp-chatops:0.1.0 ...
// The vault holds the secrets named below (slack-bot-token, slack-signing-secret,
// qlp-database-url, qlp-audit-key) before the app starts. CI scans this file with checkov
// (deploy/check azure).

@description('Where everything goes.')
param location string = resourceGroup().location

@description('Name prefix of the resources.')
param name string = 'qlp-bot'

@description('The bot image, e.g. prodqlpacr.azurecr.io/qlp-chatops:0.1.0.')
param image string

@description('The Key Vault (RBAC mode) holding the bot\'s secrets.')
param keyVaultName string

@description('The Container Apps environment (with its Log Analytics workspace).')
param containerAppsEnvironmentId string

@description('The subnet delegated to Microsoft.DBforPostgreSQL/flexibleServers.')
param postgresSubnetId string

@description('The private DNS zone linked to the VNet (privatelink.postgres.database.azure.com).')
param postgresPrivateDnsZoneId string

@description('The Microsoft Entra group administering the database server.')
param postgresAdminGroupObjectId string

@description('Its display name.')
param postgresAdminGroupName string

@description('The server\'s administrator password (the bot connects with a password: its\nQLP_DATABASE_URL, in the vault as qlp-database-url, names a login made for it).')
@secure()
param postgresAdminPassword string

@description('The policy file, mounted at /etc/qlp/qlp.yml (QLP_CONFIG).')
param policyYaml string = loadTextContent('qlp.yml')

// Built-in role definitions (the same GUIDs in every tenant), by the names of the role table.
var roles = {
  Contributor: 'b24988ac-6180-42a0-ab88-20f7382dd24c'
  'Managed Identity Operator': 'f1a07417-d97a-45cb-824c-7a7467783830'
  'CDN Profile Contributor': 'ec156ff8-a8d1-4d15-830c-5b80698ca432'
  'Key Vault Secrets User': '4633458b-17de-408a-b874-0445c86b69e6'
  'Log Analytics Reader': '73c42c96-874c-492b-b04d-ab87d138a893'
  'Monitoring Reader': '43d0d8ad-25c7-4714-9337-8ba259a9fe05'
  Reader: 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
}

// What the bot does, at this resource group's scope: create and delete the colours' container
// groups (Contributor), attach their identity (Managed Identity Operator), switch Front Door
// (CDN Profile Contributor), read the Key Vault secrets of the environments and its own (Key
// Vault Secrets User), query Logs and metrics (Log Analytics Reader, Monitoring Reader) and read
// the registry and the database backups (Reader). Narrow each to its resource where the
// resources live elsewhere (README, "Roles the bot's identity needs").
var assignedRoles = [
  'Contributor'
  'Managed Identity Operator'
  'CDN Profile Contributor'
  'Key Vault Secrets User'
  'Log Analytics Reader'
  'Monitoring Reader'
  'Reader'
]

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${name}-identity'
  location: location
}

resource roleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in assignedRoles: {
  name: guid(resourceGroup().id, identity.id, roles[role])
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles[role])
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    description: 'qlp-bot: ${role}'
  }
}]

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource postgres 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: '${name}-pg'
  location: location
  sku: {
    name: 'Standard_D2ds_v5'
    tier: 'GeneralPurpose'
  }
  properties: {
    version: '16'
    administratorLogin: 'qlpadmin'
    administratorLoginPassword: postgresAdminPassword
    storage: {
      storageSizeGB: 64
      autoGrow: 'Enabled'
    }
    backup: {
      backupRetentionDays: 35
      geoRedundantBackup: 'Enabled'
    }
    highAvailability: {
      mode: 'ZoneRedundant'
    }
    network: {
      delegatedSubnetResourceId: postgresSubnetId
      privateDnsZoneArmResourceId: postgresPrivateDnsZoneId
      publicNetworkAccess: 'Disabled'
    }
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Enabled' // the bot's driver takes a password, not an Entra token
      tenantId: subscription().tenantId
    }
  }
}

resource postgresAdmin 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = {
  parent: postgres
  name: postgresAdminGroupObjectId
  properties: {
    principalType: 'Group'
    principalName: postgresAdminGroupName
    tenantId: subscription().tenantId
  }
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: postgres
  name: 'qlp'
  properties: {
    charset: 'UTF8'
    collation: 'en_US.utf8'
  }
}

resource sslRequired 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: postgres
  name: 'require_secure_transport'
  properties: {
    value: 'on'
    source: 'user-override'
  }
}

resource app 'Microsoft.App/containerApps@2024-03-01' = {
  name: name
  location: location
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    environmentId: containerAppsEnvironmentId
    configuration: {
      activeRevisionsMode: 'Single'
      ingress: {
        external: true // Slack posts to https://<fqdn>/slack/events
        targetPort: 3000
        transport: 'http'
        allowInsecure: false
      }
      registries: [
        {
          server: split(image, '/')[0]
          identity: identity.id
        }
      ]
      // Every secret is a Key Vault reference read with the identity; none is in this file.
      secrets: [
        {
          name: 'slack-bot-token'
          keyVaultUrl: '${vault.properties.vaultUri}secrets/slack-bot-token'
          identity: identity.id
        }
        {
          name: 'slack-signing-secret'
          keyVaultUrl: '${vault.properties.vaultUri}secrets/slack-signing-secret'
          identity: identity.id
        }
        {
          name: 'qlp-database-url'
          keyVaultUrl: '${vault.properties.vaultUri}secrets/qlp-database-url'
          identity: identity.id
        }
        {
          name: 'qlp-audit-key'
          keyVaultUrl: '${vault.properties.vaultUri}secrets/qlp-audit-key'
          identity: identity.id
        }
        {
          // Not secret, but Container Apps mounts files only from secrets: the policy file.
          name: 'qlp-policy'
          value: policyYaml
        }
      ]
    }
    template: {
      containers: [
        {
          name: 'qlp-bot'
          image: image
          command: ['qlp-bot']
          args: ['serve', '--host', '0.0.0.0', '--port', '3000']
          resources: {
            cpu: json('0.5')
            memory: '1Gi'
          }
          env: [
            { name: 'QLP_CONFIG', value: '/etc/qlp/qlp.yml' }
            { name: 'QLP_HOME', value: '/var/lib/qlp' }
            { name: 'QLP_LOG_LEVEL', value: 'INFO' }
            { name: 'QLP_STALE_AFTER', value: '30' }
            { name: 'QLP_SCHEDULER_LEASE', value: '30' }
            { name: 'SLACK_BOT_TOKEN', secretRef: 'slack-bot-token' }
            { name: 'SLACK_SIGNING_SECRET', secretRef: 'slack-signing-secret' }
            { name: 'QLP_DATABASE_URL', secretRef: 'qlp-database-url' }
            { name: 'QLP_AUDIT_KEY', secretRef: 'qlp-audit-key' }
          ]
          probes: [
            {
              type: 'Startup'
              httpGet: { path: '/livez', port: 3000 }
              periodSeconds: 2
              failureThreshold: 60
              timeoutSeconds: 3
            }
            {
              type: 'Liveness'
              httpGet: { path: '/livez', port: 3000 }
              periodSeconds: 10
              failureThreshold: 3
              timeoutSeconds: 3
            }
            {
              type: 'Readiness'
              httpGet: { path: '/readyz', port: 3000 }
              periodSeconds: 5
              failureThreshold: 2
              timeoutSeconds: 3
            }
          ]
          volumeMounts: [
            { volumeName: 'policy', mountPath: '/etc/qlp' }
            { volumeName: 'qlp-home', mountPath: '/var/lib/qlp' }
          ]
        }
      ]
      // Two replicas, never fewer: they share the PostgreSQL database (run claims, the
      // scheduler lease, outbox claims), so either can die and the other carries on.
      scale: {
        minReplicas: 2
        maxReplicas: 2
      }
      volumes: [
        {
          name: 'policy'
          storageType: 'Secret'
          secrets: [{ secretRef: 'qlp-policy', path: 'qlp.yml' }]
        }
        {
          name: 'qlp-home'
          storageType: 'EmptyDir'
        }
      ]
    }
  }
  dependsOn: [
    roleAssignments // the identity reads Key Vault and pulls the image with these roles
    database
  ]
}

output fqdn string = app.properties.configuration.ingress.fqdn
output slackRequestUrl string = 'https://${app.properties.configuration.ingress.fqdn}/slack/events'
output identityClientId string = identity.properties.clientId
output identityPrincipalId string = identity.properties.principalId
output postgresHost string = postgres.properties.fullyQualifiedDomainName
