// panva's oidc-provider (a certified OpenID provider) configured for bff-proxy's
// interop tests: one confidential client, rotating refresh tokens, short-lived JWT
// access tokens (resource indicators), revocation, RP-initiated and back-channel
// logout, and a test user logged in (and consenting) without any form.
//
//   PROXY_BASE=http://127.0.0.1:8080 node provider.mjs
//
// Listens on 127.0.0.1 (port 0 unless PORT is set) and prints "ISSUER <url>".
// REQUIRE_PAR=1: only pushed authorization requests (RFC 9126) are taken.
// DPOP_NONCE=1: DPoP proofs (RFC 9449) must carry the provider's nonce.
import crypto from 'node:crypto';
import http from 'node:http';
import Provider from 'oidc-provider';

const proxyBase = process.env.PROXY_BASE;
if (!proxyBase) {
  console.error('PROXY_BASE is required');
  process.exit(2);
}
const accessTtl = Number(process.env.ACCESS_TTL || 60);
const server = http.createServer();
await new Promise((resolve) => server.listen(Number(process.env.PORT || 0), '127.0.0.1', resolve));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: 'bff',
    client_secret: 'interop-secret',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: [`${proxyBase}/bff/callback`],
    post_logout_redirect_uris: [`${proxyBase}/`],
    backchannel_logout_uri: `${proxyBase}/bff/backchannel-logout`,
    backchannel_logout_session_required: true,
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  cookies: { keys: ['interop-cookie-key-not-secret'] },
  claims: { openid: ['sub'], profile: ['name'], email: ['email'] },
  async findAccount(ctx, id) {
    return { accountId: id, async claims() { return { sub: id, name: 'Interop User', email: 'interop@example.test' }; } };
  },
  interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
  rotateRefreshToken: true,
  ttl: { AccessToken: accessTtl, IdToken: 3600, RefreshToken: 86400, Session: 86400, Grant: 86400, Interaction: 600 },
  features: {
    devInteractions: { enabled: false },
    revocation: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    backchannelLogout: { enabled: true },
    // RFC 9449: proofs with a nonce when DPOP_NONCE=1.
    dPoP: { enabled: true, nonceSecret: crypto.randomBytes(32), requireNonce: () => process.env.DPOP_NONCE === '1' },
    // RFC 9126; REQUIRE_PAR=1 makes discovery say require_pushed_authorization_requests.
    pushedAuthorizationRequests: { enabled: true, requirePushedAuthorizationRequests: process.env.REQUIRE_PAR === '1' },
    resourceIndicators: {
      enabled: true,
      // Without a resource: urn:bff:api. When the authorization named several
      // (a BFF with per-route resources) and the token request none: the first.
      defaultResource: (ctx, client, oneOf) => (oneOf ? oneOf[0] : 'urn:bff:api'),
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({ scope: 'api', accessTokenFormat: 'jwt', accessTokenTTL: accessTtl }),
    },
  },
  // The provider refuses outgoing requests to loopback addresses (SSRF protection);
  // the BFF's back-channel logout endpoint is on loopback in these tests.
  fetch: (url, options) => {
    delete options.dispatcher;
    return globalThis.fetch(url, options);
  },
});

// Log the test user in and grant what is asked, at once: the scripted flows have no
// one to click.
async function interaction(req, res) {
  const details = await provider.interactionDetails(req, res);
  const { prompt, params, session } = details;
  if (prompt.name === 'login') {
    return provider.interactionFinished(req, res, { login: { accountId: 'interop-user' } }, { mergeWithLastSubmission: false });
  }
  const grant = details.grantId
    ? await provider.Grant.find(details.grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const grantId = await grant.save();
  return provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
}

const callback = provider.callback();
server.on('request', (req, res) => {
  if (req.url.startsWith('/interaction/')) {
    interaction(req, res).catch((err) => {
      res.statusCode = 500;
      res.end(String(err));
    });
  } else {
    callback(req, res);
  }
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
console.log(`ISSUER ${issuer}`);
