// keygate driven by the strictest JavaScript clients: panva's oauth4webapi (RFC-exact,
// including RFC 9068 resource-server validation), openid-client, and jose; and the Express
// example of examples/express. Run against a real keygate by
// crates/keygate-server/tests/it/node.rs, once per signing algorithm; by hand:
//
//   KEYGATE_URL=http://127.0.0.1:8080 KEYGATE_ALG=ES256 KEYGATE_AUDIENCE=… \
//   KEYGATE_CLIENT_ID=billing KEYGATE_CLIENT_SECRET=kg_billing_… \
//   KEYGATE_ODD_CLIENT_ID=… KEYGATE_ODD_CLIENT_SECRET=… \
//   KEYGATE_USERNAME=alice KEYGATE_PASSWORD=… \
//   KEYGATE_SECRET=… (HS*) | KEYGATE_SIGNING_KEY=keys/<kid>.pem EXPRESS_URL=http://… (others) \
//   node --test
//
// keygate serves plain HTTP on loopback here, so each library is told to allow it
// (`allowInsecureRequests`); everything else is the libraries' defaults.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import * as oauth from 'oauth4webapi';
import * as client from 'openid-client';
import { SignJWT, createRemoteJWKSet, decodeJwt, importPKCS8, jwtVerify } from 'jose';

function env(name) {
  const value = process.env[name];
  assert.ok(value, `${name} is not set: run this suite through crates/keygate-server/tests/it/node.rs, or set it by hand`);
  return value;
}

const BASE = env('KEYGATE_URL').replace(/\/$/, '');
const ISSUER = new URL(BASE);
const ALG = env('KEYGATE_ALG');
const AUDIENCE = env('KEYGATE_AUDIENCE');
const CLIENT = { id: env('KEYGATE_CLIENT_ID'), secret: env('KEYGATE_CLIENT_SECRET') };
// A client whose id and secret HTTP Basic must percent-encode (RFC 6749 §2.3.1).
const ODD = { id: env('KEYGATE_ODD_CLIENT_ID'), secret: env('KEYGATE_ODD_CLIENT_SECRET') };
const USER = { name: env('KEYGATE_USERNAME'), password: env('KEYGATE_PASSWORD') };
const SYMMETRIC = ALG.startsWith('HS');
const insecure = { [oauth.allowInsecureRequests]: true };

/** The authorization server's metadata, discovered as oauth4webapi does it. */
async function discover(algorithm = 'oauth2') {
  const response = await oauth.discoveryRequest(ISSUER, { algorithm, ...insecure });
  return oauth.processDiscoveryResponse(ISSUER, response);
}

/** A client_credentials token for `who`, authenticated with `auth`. */
async function clientCredentials(as, who, auth, scope) {
  const params = scope ? new URLSearchParams({ scope }) : new URLSearchParams();
  const response = await oauth.clientCredentialsGrantRequest(as, { client_id: who.id }, auth(who.secret), params, insecure);
  return oauth.processClientCredentialsResponse(as, { client_id: who.id }, response);
}

/** A password-grant token, by the client `clientId` authenticated with `auth`. */
async function passwordGrant(as, clientId, auth, password = USER.password) {
  const params = new URLSearchParams({ username: USER.name, password });
  const response = await oauth.genericTokenEndpointRequest(as, { client_id: clientId }, auth, 'password', params, insecure);
  return oauth.processGenericTokenEndpointResponse(as, { client_id: clientId }, response);
}

/** RFC 9068 validation as a resource server does it, with the JWKS of the metadata. */
async function validateAccessToken(as, token) {
  const request = new Request('https://orders.example/orders', { headers: { authorization: `Bearer ${token}` } });
  return oauth.validateJwtAccessToken(as, request, AUDIENCE, insecure);
}

/** What jose's jwtVerify demands of a keygate access token, with `key` (a JWKS or the secret). */
function verifyWith(token, key) {
  return jwtVerify(token, key, {
    algorithms: [ALG],
    typ: 'at+jwt',
    issuer: BASE,
    audience: AUDIENCE,
    requiredClaims: ['exp', 'iat', 'nbf', 'jti', 'sub', 'client_id'],
  });
}

function joseKey() {
  return SYMMETRIC
    ? new TextEncoder().encode(env('KEYGATE_SECRET'))
    : createRemoteJWKSet(new URL(`${BASE}/.well-known/jwks.json`));
}

test('oauth4webapi discovers the metadata at both well-known paths, checking the issuer', async () => {
  for (const algorithm of ['oauth2', 'oidc']) {
    const as = await discover(algorithm);
    assert.equal(as.issuer, BASE, algorithm);
    assert.equal(as.token_endpoint, `${BASE}/token`);
    assert.equal(as.introspection_endpoint, `${BASE}/introspect`);
    assert.equal(as.revocation_endpoint, `${BASE}/revoke`);
    assert.equal(as.userinfo_endpoint, `${BASE}/userinfo`);
    assert.equal(as.jwks_uri, `${BASE}/.well-known/jwks.json`);
    assert.deepEqual(as.grant_types_supported, ['client_credentials', 'password']);
    assert.deepEqual(as.token_endpoint_auth_methods_supported, ['client_secret_basic', 'client_secret_post']);
    // keygate is not an OpenID Provider: it claims no ID tokens.
    assert.equal(as.id_token_signing_alg_values_supported, undefined);
    assert.equal(as.authorization_endpoint, undefined);
  }
});

test('oauth4webapi: client_credentials with client_secret_basic and client_secret_post', async () => {
  const as = await discover();
  for (const [name, auth] of [['basic', oauth.ClientSecretBasic], ['post', oauth.ClientSecretPost]]) {
    for (const who of [CLIENT, ODD]) {
      const tokens = await clientCredentials(as, who, auth, 'orders:read');
      assert.equal(tokens.token_type, 'bearer', `${name} ${who.id}`);
      assert.ok(tokens.expires_in > 0);
      assert.equal(tokens.scope, 'orders:read');
      const claims = decodeJwt(tokens.access_token);
      assert.equal(claims.client_id, who.id, `${name} ${who.id}`);
      assert.equal(claims.sub, who.id);
    }
  }
});

test('oauth4webapi: a wrong client secret is 401 invalid_client with a Basic challenge', async () => {
  const as = await discover();
  await assert.rejects(
    clientCredentials(as, { id: CLIENT.id, secret: `${CLIENT.secret}x` }, oauth.ClientSecretBasic),
    (err) => {
      assert.ok(err instanceof oauth.WWWAuthenticateChallengeError || err instanceof oauth.ResponseBodyError, String(err));
      assert.equal(err.response?.status ?? err.status, 401);
      return true;
    },
  );
});

test('oauth4webapi: the password grant, by the public client and by an authenticated one', async () => {
  const as = await discover();
  const publicToken = await passwordGrant(as, 'keygate', oauth.None());
  let claims = decodeJwt(publicToken.access_token);
  assert.equal(claims.sub, USER.name);
  assert.equal(claims.client_id, 'keygate', 'the public client requested it');

  const confidential = await passwordGrant(as, CLIENT.id, oauth.ClientSecretBasic(CLIENT.secret));
  claims = decodeJwt(confidential.access_token);
  assert.equal(claims.sub, USER.name);
  assert.equal(claims.client_id, CLIENT.id, 'RFC 9068 §2.2: the client that requested it');

  // RFC 6749 §4.3.2: included client authentication is checked, good password or not.
  await assert.rejects(
    passwordGrant(as, CLIENT.id, oauth.ClientSecretBasic(`${CLIENT.secret}x`)),
    (err) => {
      assert.equal(err.response?.status ?? err.status, 401, String(err));
      return true;
    },
  );
  await assert.rejects(passwordGrant(as, 'keygate', oauth.None(), 'wrong'), (err) => {
    assert.ok(err instanceof oauth.ResponseBodyError, String(err));
    assert.equal(err.status, 400);
    assert.equal(err.error, 'invalid_grant');
    return true;
  });
});

if (SYMMETRIC) {
  test(`jose: jwtVerify with the ${ALG} secret checks typ, iss, aud and the RFC 9068 claims`, async () => {
    const as = await discover();
    const { access_token } = await clientCredentials(as, CLIENT, oauth.ClientSecretBasic);
    const { payload, protectedHeader } = await verifyWith(access_token, joseKey());
    assert.equal(protectedHeader.typ, 'at+jwt');
    assert.equal(payload.client_id, CLIENT.id);
    // oauth4webapi validates RFC 9068 tokens signed with public keys only: HS* is refused.
    await assert.rejects(validateAccessToken(as, access_token));
  });
} else {
  test(`oauth4webapi: validateJwtAccessToken (RFC 9068) accepts ${ALG} tokens of both grants`, async () => {
    const as = await discover();
    const cc = await clientCredentials(as, CLIENT, oauth.ClientSecretBasic, 'orders:read');
    let claims = await validateAccessToken(as, cc.access_token);
    assert.equal(claims.client_id, CLIENT.id);
    assert.equal(claims.scope, 'orders:read');
    const pw = await passwordGrant(as, 'keygate', oauth.None());
    claims = await validateAccessToken(as, pw.access_token);
    assert.equal(claims.sub, USER.name);
    assert.equal(claims.client_id, 'keygate');
    // Another audience is refused.
    const request = new Request('https://x.example/', { headers: { authorization: `Bearer ${cc.access_token}` } });
    await assert.rejects(oauth.validateJwtAccessToken(as, request, 'another-api', insecure));
  });

  test(`jose: jwtVerify with createRemoteJWKSet checks typ, iss, aud of ${ALG} tokens`, async () => {
    const as = await discover();
    const { access_token } = await clientCredentials(as, CLIENT, oauth.ClientSecretPost);
    const jwks = joseKey();
    const { payload, protectedHeader } = await verifyWith(access_token, jwks);
    assert.equal(protectedHeader.alg, ALG);
    assert.equal(protectedHeader.typ, 'at+jwt');
    assert.equal(payload.client_id, CLIENT.id);
    await assert.rejects(jwtVerify(access_token, jwks, { algorithms: [ALG], audience: 'another-api' }));
    await assert.rejects(jwtVerify(access_token, jwks, { algorithms: [ALG], issuer: 'https://elsewhere.example' }));
  });
}

test('oauth4webapi: introspection (RFC 7662) and revocation (RFC 7009)', async () => {
  const as = await discover();
  const { access_token } = await clientCredentials(as, CLIENT, oauth.ClientSecretBasic);
  const introspect = async (auth) => {
    const response = await oauth.introspectionRequest(as, { client_id: CLIENT.id }, auth, access_token, insecure);
    return oauth.processIntrospectionResponse(as, { client_id: CLIENT.id }, response);
  };
  let result = await introspect(oauth.ClientSecretPost(CLIENT.secret));
  assert.equal(result.active, true);
  assert.equal(result.client_id, CLIENT.id);
  assert.equal(result.token_type, 'Bearer');

  const response = await oauth.revocationRequest(as, { client_id: CLIENT.id }, oauth.ClientSecretBasic(CLIENT.secret), access_token, insecure);
  await oauth.processRevocationResponse(response);
  result = await introspect(oauth.ClientSecretBasic(CLIENT.secret));
  assert.deepEqual(result, { active: false });
});

test('oauth4webapi: userinfo, and RFC 6750 challenges for missing and bad tokens', async () => {
  const as = await discover();
  const { access_token } = await clientCredentials(as, CLIENT, oauth.ClientSecretBasic);
  const info = await oauth.processUserInfoResponse(
    as,
    { client_id: CLIENT.id },
    CLIENT.id,
    await oauth.userInfoRequest(as, { client_id: CLIENT.id }, access_token, insecure),
  );
  assert.equal(info.sub, CLIENT.id);
  assert.equal(info.client_id, CLIENT.id);

  const forged = `${access_token.slice(0, -4)}AAAA`;
  await assert.rejects(
    oauth.processUserInfoResponse(
      as,
      { client_id: CLIENT.id },
      CLIENT.id,
      await oauth.userInfoRequest(as, { client_id: CLIENT.id }, forged, insecure),
    ),
    (err) => {
      assert.ok(err instanceof oauth.WWWAuthenticateChallengeError, String(err));
      assert.equal(err.status, 401);
      const [challenge] = err.cause;
      assert.equal(challenge.scheme, 'bearer');
      assert.equal(challenge.parameters.error, 'invalid_token');
      return true;
    },
  );
  const none = await fetch(`${BASE}/userinfo`);
  assert.equal(none.status, 401);
  assert.equal(none.headers.get('www-authenticate'), 'Bearer realm="keygate"');
});

test('unrecognised form parameters are ignored, even repeated (RFC 6749 §3.2)', async () => {
  const as = await discover();
  const { access_token } = await clientCredentials(as, CLIENT, oauth.ClientSecretBasic);
  const body = new URLSearchParams([['token', access_token], ['üµ', '1'], ['üµ', '2']]);
  const response = await fetch(`${BASE}/introspect`, {
    method: 'POST',
    headers: { authorization: `Basic ${btoa(`${CLIENT.id}:${CLIENT.secret}`)}` },
    body,
  });
  assert.equal(response.status, 200);
  assert.equal((await response.json()).active, true);
});

test('openid-client: discovery, client_credentials, introspection, userinfo, revocation', async () => {
  const config = await client.discovery(ISSUER, CLIENT.id, CLIENT.secret, undefined, {
    execute: [client.allowInsecureRequests],
  });
  assert.equal(config.serverMetadata().issuer, BASE);
  const tokens = await client.clientCredentialsGrant(config, { scope: 'orders:read' });
  assert.equal(tokens.token_type, 'bearer');
  assert.equal(decodeJwt(tokens.access_token).scope, 'orders:read');
  const introspection = await client.tokenIntrospection(config, tokens.access_token);
  assert.equal(introspection.active, true);
  const info = await client.fetchUserInfo(config, tokens.access_token, CLIENT.id);
  assert.equal(info.sub, CLIENT.id);
  await client.tokenRevocation(config, tokens.access_token);
  assert.deepEqual(await client.tokenIntrospection(config, tokens.access_token), { active: false });

  const user = await client.genericGrantRequest(config, 'password', { username: USER.name, password: USER.password });
  assert.equal(decodeJwt(user.access_token).client_id, CLIENT.id);
});

if (!SYMMETRIC) {
  // examples/express: an API trusting keygate through the JWKS. Tokens it must refuse
  // are signed with keygate's own key, so each refusal is that check's alone.
  const EXPRESS = env('EXPRESS_URL');
  const orders = (token) =>
    fetch(`${EXPRESS}/orders`, token ? { headers: { authorization: `Bearer ${token}` } } : {});
  const signed = async (claims, typ = 'at+jwt') => {
    const pem = readFileSync(env('KEYGATE_SIGNING_KEY'), 'utf8');
    const key = await importPKCS8(pem, ALG);
    const { keys } = await (await fetch(`${BASE}/.well-known/jwks.json`)).json();
    const now = Math.floor(Date.now() / 1000);
    return new SignJWT({
      iss: BASE, aud: AUDIENCE, sub: CLIENT.id, client_id: CLIENT.id, jti: `node-${now}-${Math.random()}`,
      iat: now, nbf: now, exp: now + 300, scope: 'orders:read', ...claims,
    })
      .setProtectedHeader({ alg: ALG, typ, kid: keys[0].kid })
      .sign(key);
  };

  test('examples/express serves a keygate token with the scope, and only that', async () => {
    const as = await discover();
    const { access_token } = await clientCredentials(as, CLIENT, oauth.ClientSecretBasic, 'orders:read');
    let response = await orders(access_token);
    assert.equal(response.status, 200);
    assert.deepEqual(await response.json(), { sub: CLIENT.id, client_id: CLIENT.id, orders: [{ id: 1, item: 'keyboard' }] });
    // The checks are the example's, not luck: a token made just like keygate's passes.
    response = await orders(await signed({}));
    assert.equal(response.status, 200);

    response = await orders(undefined);
    assert.equal(response.status, 401);
    assert.equal(response.headers.get('www-authenticate'), 'Bearer realm="orders"');

    for (const [what, token] of [
      ['typ JWT', await signed({}, 'JWT')],
      ['another issuer', await signed({ iss: 'https://elsewhere.example' })],
      ['another audience', await signed({ aud: 'another-api' })],
      ['no audience', await signed({ aud: undefined })],
      ['expired', await signed({ exp: Math.floor(Date.now() / 1000) - 120 })],
    ]) {
      response = await orders(token);
      assert.equal(response.status, 401, what);
      assert.equal(response.headers.get('www-authenticate'), 'Bearer realm="orders", error="invalid_token"', what);
      assert.equal((await response.json()).error, 'invalid_token', what);
    }

    const narrow = await clientCredentials(as, CLIENT, oauth.ClientSecretBasic, 'orders:write');
    response = await orders(narrow.access_token);
    assert.equal(response.status, 403);
    assert.equal(response.headers.get('www-authenticate'), 'Bearer realm="orders", error="insufficient_scope", scope="orders:read"');
  });
}
