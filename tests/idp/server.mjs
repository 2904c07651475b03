// A real OpenID provider for scopegate's integration tests: oidc-provider
// (panva) on loopback, with the client-credentials grant, RFC 8707 resource
// indicators (JWT access tokens), Auth0's `audience` parameter mapped to the
// resource, opaque tokens without one, RFC 7662 introspection, RFC 7009
// revocation, and a /_stats endpoint counting token and introspection
// requests.
//
//   IDP_PORT=…  IDP_KEYS=keys.json (created if missing; reused across restarts)
//   IDP_CLIENTS='[{"client_id":…,"client_secret":…,"token_endpoint_auth_method":…}]'
//   IDP_TTL=seconds of an access token   IDP_SCOPES='read:users delete:users'
import fs from 'node:fs';
import { generateKeyPair, exportJWK } from 'jose';
import Provider from 'oidc-provider';

const port = Number(process.env.IDP_PORT);
const issuer = `http://127.0.0.1:${port}`;
const ttl = Number(process.env.IDP_TTL || 300);
const scopes = process.env.IDP_SCOPES || 'read:users delete:users';

let keys;
if (fs.existsSync(process.env.IDP_KEYS)) {
  keys = JSON.parse(fs.readFileSync(process.env.IDP_KEYS, 'utf8'));
} else {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwk = { ...(await exportJWK(privateKey)), kid: 'idp-1', alg: 'RS256', use: 'sig' };
  keys = { keys: [jwk] };
  fs.writeFileSync(process.env.IDP_KEYS, JSON.stringify(keys));
}

const clients = JSON.parse(process.env.IDP_CLIENTS).map((c) => ({
  grant_types: ['client_credentials'],
  redirect_uris: [],
  response_types: [],
  ...c,
}));

const provider = new Provider(issuer, {
  clients,
  // Scopes a client may ask for without a resource (opaque tokens).
  scopes: ['openid', 'offline_access', ...scopes.split(' ')],
  jwks: keys,
  extraParams: ['audience'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    introspection: { enabled: true },
    revocation: { enabled: true },
    resourceIndicators: {
      enabled: true,
      // Auth0's `audience` names the API the way RFC 8707's `resource` does.
      defaultResource: (ctx) => ctx.oidc.body?.audience || undefined,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resourceIndicator) => ({
        scope: scopes,
        audience: resourceIndicator,
        accessTokenTTL: ttl,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
});

let tokenRequests = 0;
let introspectionRequests = 0;
provider.use(async (ctx, next) => {
  if (ctx.path === '/_stats') {
    ctx.body = { token_requests: tokenRequests, introspection_requests: introspectionRequests };
    return;
  }
  if (ctx.path === '/token' && ctx.method === 'POST') tokenRequests += 1;
  if (ctx.path === '/token/introspection' && ctx.method === 'POST') introspectionRequests += 1;
  await next();
});

provider.listen(port, '127.0.0.1', () => {
  console.log(`idp listening on ${issuer}`);
});
