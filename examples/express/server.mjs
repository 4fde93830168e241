// An Express API that trusts keygate's access tokens without calling keygate per request:
// jose verifies each bearer token against keygate's published keys (the JWKS, fetched once
// and again when a token names an unknown `kid`, that is after a rotation) and checks what
// RFC 9068 §4 asks of a resource server: `typ` is `at+jwt`, `iss` is keygate's issuer,
// `aud` names this API, the signature uses the one algorithm configured, and the token is
// within its lifetime. Then the route's scope. Refusals follow RFC 6750 §3.
//
// Settings (environment):
//   KEYGATE_URL        keygate's public URL                  (http://127.0.0.1:8080)
//   KEYGATE_ISSUER     the `iss` to demand                   (KEYGATE_URL)
//   KEYGATE_AUDIENCE   the `aud` to demand: keygate's `token.audience` (required)
//   KEYGATE_ALGORITHM  ES256, EdDSA or RS256: keygate's `token.algorithm` (ES256)
//   HOST, PORT         where to listen                       (127.0.0.1, 3000; 0 = any free port)

import express from 'express';
import { createRemoteJWKSet, jwtVerify, errors } from 'jose';

const KEYGATE_URL = (process.env.KEYGATE_URL ?? 'http://127.0.0.1:8080').replace(/\/$/, '');
const ISSUER = process.env.KEYGATE_ISSUER ?? KEYGATE_URL;
const AUDIENCE = process.env.KEYGATE_AUDIENCE;
const ALGORITHM = process.env.KEYGATE_ALGORITHM ?? 'ES256';
if (!AUDIENCE) {
  console.error('KEYGATE_AUDIENCE is required: the value of keygate\'s token.audience (keygate init writes its public URL)');
  process.exit(2);
}
if (!['ES256', 'EdDSA', 'RS256'].includes(ALGORITHM)) {
  console.error(`KEYGATE_ALGORITHM=${ALGORITHM}: a JWKS holds public keys only (ES256, EdDSA, RS256); HS* tokens need the shared secret`);
  process.exit(2);
}

const jwks = createRemoteJWKSet(new URL(`${KEYGATE_URL}/.well-known/jwks.json`));

/** The verified claims of the request's bearer token, or a refusal (RFC 6750 §3). */
async function claimsOf(req) {
  const header = req.get('authorization') ?? '';
  const [scheme, token, ...rest] = header.split(' ');
  if (!token || rest.length || scheme.toLowerCase() !== 'bearer') {
    return { refusal: [401, 'Bearer realm="orders"', { error: 'invalid_request', error_description: 'a bearer token is required' }] };
  }
  try {
    const { payload } = await jwtVerify(token, jwks, {
      algorithms: [ALGORITHM],
      typ: 'at+jwt',
      issuer: ISSUER,
      audience: AUDIENCE,
      requiredClaims: ['exp', 'iat', 'jti', 'sub', 'client_id'],
      clockTolerance: 30,
    });
    return { claims: payload };
  } catch (e) {
    if (!(e instanceof errors.JOSEError)) throw e;
    // Why, for the operator's log; the caller learns only that the token is not good.
    console.error(`token refused: ${e.code}: ${e.message}`);
    return { refusal: [401, 'Bearer realm="orders", error="invalid_token"', { error: 'invalid_token', error_description: 'the token is not valid' }] };
  }
}

/** Middleware: a valid token granting `scope`, its claims in `res.locals.claims`. */
function requireScope(scope) {
  return async (req, res, next) => {
    const { claims, refusal } = await claimsOf(req);
    if (refusal) {
      const [status, challenge, body] = refusal;
      return res.status(status).set('WWW-Authenticate', challenge).json(body);
    }
    const granted = typeof claims.scope === 'string' ? claims.scope.split(' ') : [];
    if (!granted.includes(scope)) {
      return res
        .status(403)
        .set('WWW-Authenticate', `Bearer realm="orders", error="insufficient_scope", scope="${scope}"`)
        .json({ error: 'insufficient_scope', error_description: `the token lacks the scope ${scope}` });
    }
    res.locals.claims = claims;
    return next();
  };
}

const app = express();
app.get('/orders', requireScope('orders:read'), (req, res) => {
  const { sub, client_id } = res.locals.claims;
  res.json({ sub, client_id, orders: [{ id: 1, item: 'keyboard' }] });
});

const server = app.listen(Number(process.env.PORT ?? 3000), process.env.HOST ?? '127.0.0.1', () => {
  const { address, port } = server.address();
  console.log(`orders API listening on http://${address}:${port}`);
});
