// A real OpenID provider (panva/oidc-provider, OpenID certified) for sshgate's sign-in tests and
// the compose playground. Device flow on, test people with email and groups, its own login,
// consent and device pages (no external resources, so a headless browser needs no network).
//
//   node server.mjs [--host 127.0.0.1] [--port 0] [--issuer URL] [--auth-methods a,b] [--web-redirect URL]
//
// Prints `ready ISSUER` on stdout once listening. Test-only extras:
//   device authorizations answer interval 1 (s), so sign-ins in tests take a second, not five
//   GET /__stats                          request counts per endpoint (jwks, token, ...)
//   people wrongaud@corp.com, expired@corp.com, badkid@corp.com: their ID tokens come out with a
//   wrong audience, already expired, or signed by a key the JWKS does not hold (a new kid each)
//   client sshgate-short: its device codes expire after 3 s
//   --web-redirect URL[,URL]: client sshgate also does the authorization-code flow (the web
//   app's sign-in, PKCE) with these redirect URIs
import http from 'node:http';
import { parseArgs } from 'node:util';
import { randomUUID } from 'node:crypto';

import Provider from 'oidc-provider';
import { SignJWT, decodeJwt, exportJWK, generateKeyPair, importJWK } from 'jose';

const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    issuer: { type: 'string' },
    'auth-methods': { type: 'string', default: 'client_secret_basic,client_secret_post' },
    'client-secret': { type: 'string', default: process.env.OIDC_CLIENT_SECRET || 'sshgate-test-secret' },
    'web-redirect': { type: 'string' },
  },
});

// The people this provider knows. Their password is "password" (test accounts only).
const PEOPLE = {
  'alice@corp.com': { groups: ['engineers'], verified: true, name: 'Alice' },
  'bob@corp.com': { groups: ['sales'], verified: true, name: 'Bob' },
  'carol@other.com': { groups: ['engineers'], verified: true, name: 'Carol' },
  'dave@corp.com': { groups: ['engineers'], verified: false, name: 'Dave' },
  'wrongaud@corp.com': { groups: ['engineers'], verified: true, name: 'W', fault: 'aud' },
  'expired@corp.com': { groups: ['engineers'], verified: true, name: 'E', fault: 'expired' },
  'badkid@corp.com': { groups: ['engineers'], verified: true, name: 'K', fault: 'badkid' },
  'sec@corp.com': { groups: ['security'], verified: true, name: 'Sec' },
  'admin@corp.com': { groups: ['security-admins'], verified: true, name: 'Admin' },
};
const PASSWORD = 'password';

const SHORT_CODE_CLIENT = 'sshgate-short';
const stats = {};

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (title, body) => `<!DOCTYPE html><html><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>body{font-family:sans-serif;max-width:28em;margin:2em auto}input,button{display:block;margin:.5em 0;font-size:1em}</style>
</head><body><h1>${esc(title)}</h1>${body}</body></html>`;

async function signingKey(alg, kid) {
  const { privateKey } = await generateKeyPair(alg, { extractable: true });
  return { ...(await exportJWK(privateKey)), kid, alg, use: 'sig' };
}

const server = http.createServer();
await new Promise((resolve) => server.listen(Number(args.port), args.host, resolve));
const { port } = server.address();
const issuer = args.issuer || `http://${args.host}:${port}`;

const jwks = { keys: [await signingKey('RS256', 'rs-1'), await signingKey('ES256', 'es-1')] };
const rogue = await generateKeyPair('RS256');

const deviceClient = (clientId) => {
  const web = clientId === 'sshgate' && args['web-redirect'];
  return {
    client_id: clientId,
    client_secret: args['client-secret'],
    grant_types: ['urn:ietf:params:oauth:grant-type:device_code', 'refresh_token', ...(web ? ['authorization_code'] : [])],
    response_types: web ? ['code'] : [],
    redirect_uris: web ? args['web-redirect'].split(',') : [],
    token_endpoint_auth_method: args['auth-methods'].split(',')[0],
  };
};

const provider = new Provider(issuer, {
  clients: ['sshgate', SHORT_CODE_CLIENT].map(deviceClient),
  clientAuthMethods: args['auth-methods'].split(','),
  jwks,
  cookies: { keys: ['sshgate-test-cookie-key-not-secret'] },
  scopes: ['openid', 'offline_access', 'email', 'profile', 'groups'],
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['name'], groups: ['groups'] },
  acrValues: ['urn:sshgate:password', 'urn:sshgate:mfa'],
  // With --web-redirect, ID tokens carry email and groups themselves (as Okta's and Google's do), so a
  // script's bearer ID token names its person; otherwise they sit in userinfo only.
  conformIdTokenClaims: !args['web-redirect'],
  features: {
    devInteractions: { enabled: false },
    deviceFlow: {
      enabled: true,
      userCodeInputSource: async (ctx, form, out, err) => {
        ctx.body = page('Sign in a device', `${err ? '<p>That code did not work.</p>' : ''}${form}
<button type="submit" form="op.deviceInputForm">Continue</button>`);
      },
      userCodeConfirmSource: async (ctx, form, client, deviceInfo, userCode) => {
        ctx.body = page('Confirm device', `<p>${esc(client.clientId)} shows the code <code id="user-code">${esc(userCode)}</code>.</p>${form}
<button type="submit" form="op.deviceConfirmForm" id="continue">Continue</button>
<button type="submit" form="op.deviceConfirmForm" name="abort" value="yes" id="abort">Abort</button>`);
      },
      successSource: async (ctx) => {
        ctx.body = page('Signed in', '<p id="done">You are signed in; you can close this page.</p>');
      },
    },
  },
  renderError: async (ctx, out) => {
    ctx.type = 'html';
    ctx.body = page('Sign-in error', Object.entries(out).map(([k, v]) => `<p class="error">${esc(k)}: ${esc(v)}</p>`).join(''));
  },
  ttl: {
    DeviceCode: (ctx, token, client) => (client.clientId === SHORT_CODE_CLIENT ? 3 : 600),
    IdToken: 3600,
    AccessToken: 600,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
    RefreshToken: 3600,
  },
  interactions: { url: async (ctx, interaction) => `/interaction/${interaction.uid}` },
  findAccount: async (ctx, sub) => {
    const person = PEOPLE[sub];
    if (!person) return undefined;
    return {
      accountId: sub,
      claims: async () => ({ sub, email: sub, email_verified: person.verified, name: person.name, groups: person.groups }),
    };
  },
});

// Count requests per endpoint, and spoil the ID tokens of the fault people.
provider.use(async (ctx, next) => {
  const name = ctx.path.replace(/^\//, '').split('/')[0] || 'root';
  stats[name] = (stats[name] || 0) + 1;
  await next();
  if (ctx.path === '/device/auth' && ctx.status === 200) ctx.body = { ...ctx.body, interval: 1 }; // tests poll fast
  const claims = ctx.path === '/token' && ctx.status === 200 && ctx.body?.id_token ? decodeJwt(ctx.body.id_token) : {};
  const fault = PEOPLE[claims.sub]?.fault;
  if (fault) {
    const now = Math.floor(Date.now() / 1000);
    let key = await importJWK(jwks.keys[0], 'RS256');
    let kid = jwks.keys[0].kid;
    if (fault === 'aud') claims.aud = 'some-other-application';
    if (fault === 'expired') Object.assign(claims, { iat: now - 7200, exp: now - 3600 });
    if (fault === 'badkid') [key, kid] = [rogue.privateKey, `unknown-${randomUUID()}`];
    ctx.body = { ...ctx.body, id_token: await new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid }).sign(key) };
  }
});

async function readForm(req) {
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 65536) throw new Error('form too large');
  }
  return Object.fromEntries(new URLSearchParams(body));
}

// The provider's own login and consent pages.
async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) throw new Error('interaction mismatch');
  const { prompt, params, session } = details;
  if (req.method === 'GET') {
    res.setHeader('Content-Type', 'text/html; charset=utf-8');
    const abort = `<form method="post" action="/interaction/${uid}/abort"><button type="submit" id="deny">Deny</button></form>`;
    if (prompt.name === 'login') {
      const note = prompt.reasons.includes('login_prompt') || params.max_age !== undefined ? '<p id="again">Please sign in again.</p>' : '';
      res.end(page('Sign in', `${note}<form method="post" action="/interaction/${uid}/login">
<input type="email" name="email" id="email" placeholder="email" autofocus>
<input type="password" name="password" id="password" placeholder="password">
<button type="submit" id="sign-in">Sign in</button></form>${abort}`));
    } else {
      res.end(page('Allow access', `<p>${esc(params.client_id)} asks for: ${esc(params.scope)}</p>
<form method="post" action="/interaction/${uid}/confirm"><button type="submit" id="allow">Allow</button></form>${abort}`));
    }
    return;
  }
  const form = await readForm(req);
  if (action === 'abort') {
    await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'End-User aborted interaction' }, { mergeWithLastSubmission: false });
  } else if (action === 'login') {
    const email = String(form.email || '').toLowerCase();
    if (!PEOPLE[email] || form.password !== PASSWORD) {
      res.statusCode = 200;
      res.setHeader('Content-Type', 'text/html; charset=utf-8');
      res.end(page('Sign in', `<p id="error">Wrong email or password.</p><p><a href="/interaction/${uid}">Try again</a></p>`));
      return;
    }
    const acr = params.acr_values ? String(params.acr_values).split(' ')[0] : 'urn:sshgate:password';
    await provider.interactionFinished(req, res, { login: { accountId: email, acr, amr: ['pwd'] } }, { mergeWithLastSubmission: false });
  } else if (action === 'confirm') {
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
    const missing = prompt.details;
    if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
    if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes || {})) grant.addResourceScope(indicator, scopes.join(' '));
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: details.grantId ? {} : { grantId } }, { mergeWithLastSubmission: true });
  } else {
    res.statusCode = 404;
    res.end();
  }
}

const callback = provider.callback();
server.on('request', async (req, res) => {
  const url = new URL(req.url, issuer);
  if (url.pathname === '/__stats') {
    res.setHeader('Content-Type', 'application/json');
    res.end(JSON.stringify(stats));
    return;
  }
  const match = url.pathname.match(/^\/interaction\/([\w-]+)(?:\/(login|confirm|abort))?$/);
  if (!match) {
    callback(req, res);
    return;
  }
  try {
    await interaction(req, res, match[1], match[2]);
  } catch (err) {
    res.statusCode = 400;
    res.setHeader('Content-Type', 'text/html; charset=utf-8');
    res.end(page('Sign-in error', `<p class="error">${esc(err.message)}</p>`));
  }
});

for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => { server.close(() => process.exit(0)); server.closeAllConnections(); });
process.stdout.write(`ready ${issuer}\n`);
