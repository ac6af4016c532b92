// Reference OpenID Provider for scripts/bench_backchannel.py: panva/node-oidc-provider 9.x
// configured like ciba-service's benchmark setup.
//
//   cd scripts/bench/oidc-provider && npm install && \
//     node server.mjs --port 3000 --client-secret SECRET
//
// - CIBA (features.ciba): poll delivery only; triggerAuthenticationDevice does nothing (no
//   device is told); the default validateBindingMessage; login_hint "alice" resolves to the
//   account "alice" (anything else: unknown_user_id); login_hint_token is not accepted.
// - RAR (features.richAuthorizationRequests): one type, `iam_policy`, validated minimally
//   (actions: non-empty array of strings, identifier: string, locations: absolute http(s) URIs,
//   no other fields).
// - Resource indicators: every request defaults to one resource server, https://iam.example.test/
//   (audience resource-api, ES256 JWT access tokens of 120 s), as RAR requires a resource there.
// - One client, `bench-agent`: client_secret_basic, grant type
//   urn:openid:params:grant-type:ciba, backchannel_token_delivery_mode poll.
// - Storage: oidc-provider's bundled in-memory adapter (no `adapter` configured). It is an LRU
//   of 1,000 entries (two generations, so 1,000 to 2,000 survive): older pending requests are
//   forgotten, which the benchmark's token-poll phase accounts for.
// - Signing key: one ES256 key generated at start.
//
// Prints "listening <issuer>" on stdout once it accepts connections.
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '3000' },
    host: { type: 'string', default: '127.0.0.1' },
    'client-secret': { type: 'string' },
    'request-expiry': { type: 'string', default: '300' },
  },
});
const clientSecret = args['client-secret'] ?? process.env.BENCH_CLIENT_SECRET;
if (!clientSecret) {
  console.error('--client-secret (or BENCH_CLIENT_SECRET) is required');
  process.exit(2);
}
const port = Number(args.port);
const issuer = `http://localhost:${port}`;
const requestExpiry = Number(args['request-expiry']);

const ACCOUNTS = new Set(['alice']);
const RESOURCE = 'https://iam.example.test/';
const IAM_FIELDS = new Set(['type', 'actions', 'identifier', 'locations']);

function isHttpUrl(value) {
  if (typeof value !== 'string') return false;
  try {
    const url = new URL(value);
    return (url.protocol === 'https:' || url.protocol === 'http:') && !url.hash;
  } catch {
    return false;
  }
}

function validateIamPolicy(ctx, detail) {
  for (const key of Object.keys(detail)) {
    if (!IAM_FIELDS.has(key)) {
      throw new errors.InvalidAuthorizationDetails(`iam_policy: unknown field '${key}'`);
    }
  }
  const { actions, identifier, locations } = detail;
  if (!Array.isArray(actions) || actions.length === 0 || actions.some((a) => typeof a !== 'string' || !a)) {
    throw new errors.InvalidAuthorizationDetails('iam_policy: actions must be a non-empty array of strings');
  }
  if (identifier !== undefined && (typeof identifier !== 'string' || !identifier)) {
    throw new errors.InvalidAuthorizationDetails('iam_policy: identifier must be a non-empty string');
  }
  if (locations !== undefined && (!Array.isArray(locations) || !locations.every(isHttpUrl))) {
    throw new errors.InvalidAuthorizationDetails('iam_policy: locations must be absolute http(s) URIs');
  }
}

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingKey = { ...privateKey.export({ format: 'jwk' }), alg: 'ES256', use: 'sig', kid: 'bench-es256' };

const configuration = {
  clients: [
    {
      client_id: 'bench-agent',
      client_secret: clientSecret,
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['urn:openid:params:grant-type:ciba'],
      response_types: [],
      redirect_uris: [],
      backchannel_token_delivery_mode: 'poll',
      authorization_details_types: ['iam_policy'],
      id_token_signed_response_alg: 'ES256',
    },
  ],
  jwks: { keys: [signingKey] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  findAccount(ctx, sub) {
    if (!ACCOUNTS.has(sub)) return undefined;
    return { accountId: sub, claims: () => ({ sub }) };
  },
  ttl: {
    BackchannelAuthenticationRequest: () => requestExpiry,
    AccessToken: 120,
    IdToken: 120,
  },
  features: {
    devInteractions: { enabled: false },
    ciba: {
      enabled: true,
      deliveryModes: ['poll'],
      async triggerAuthenticationDevice() {},
      async processLoginHint(ctx, loginHint) {
        return ACCOUNTS.has(loginHint) ? loginHint : undefined;
      },
      async processLoginHintToken() {
        throw new errors.InvalidRequest('login_hint_token is not supported here');
      },
      async verifyUserCode() {},
      async validateRequestContext() {},
      // validateBindingMessage: the default (1-20 characters of a basic set).
    },
    // RAR needs a resource (audience) for the token: one resource server, the IAM API, whose
    // tokens are ES256 JWTs of 120 s (ciba-service: at+jwt, ES256, access_token_lifetime).
    resourceIndicators: {
      enabled: true,
      defaultResource: () => RESOURCE,
      getResourceServerInfo(ctx, resourceIndicator) {
        if (resourceIndicator !== RESOURCE) throw new errors.InvalidTarget();
        return {
          scope: '',
          audience: 'resource-api',
          accessTokenTTL: 120,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
    richAuthorizationRequests: {
      enabled: true,
      types: { iam_policy: { validate: validateIamPolicy } },
      // Only called when tokens are issued (never in the benchmark): keep the details.
      authorizationDetailsForGrantSource(ctx, source) {
        return source.authorizationDetails ?? undefined;
      },
      authorizationDetailsForAccessToken(ctx, token, source) {
        return source?.authorizationDetails ?? undefined;
      },
      authorizationDetailsForIntrospection(ctx, token) {
        return token.authorizationDetails ?? undefined;
      },
    },
  },
};

const provider = new Provider(issuer, configuration);
const server = provider.listen(port, args.host, () => {
  console.log(`listening ${issuer}`);
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
