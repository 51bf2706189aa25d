// The Node BFF of benches/load/run.sh's comparison row: what a team would write
// with the usual packages. express-openid-connect runs the login (authorization
// code) and keeps the tokens in its encrypted session cookie; /api/ requests get
// the access token (refreshed when expired) as a Bearer header and go to the
// upstream through http-proxy-middleware with keep-alive. A cluster of WORKERS
// processes, like the proxies' worker threads.
//
//   PORT=… UPSTREAM=http://127.0.0.1:… ISSUER=http://127.0.0.1:… CLIENT_ID=…
//   CLIENT_SECRET=… WORKERS=2 node bff.js
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

const env = (name) => {
  const v = process.env[name];
  if (!v) { console.error(`bff.js: ${name} is required`); process.exit(2); }
  return v;
};
const port = Number(env('PORT'));
const workers = Number(process.env.WORKERS || 2);

if (cluster.isPrimary) {
  for (let i = 0; i < workers; i++) cluster.fork();
  cluster.on('exit', (w, code) => { if (code !== 0) console.error(`worker ${w.process.pid} exited ${code}`); });
} else {
  const express = require('express');
  const { auth, requiresAuth } = require('express-openid-connect');
  const { createProxyMiddleware } = require('http-proxy-middleware');
  const app = express();
  app.use(auth({
    issuerBaseURL: env('ISSUER'),
    baseURL: `http://127.0.0.1:${port}`,
    clientID: env('CLIENT_ID'),
    clientSecret: env('CLIENT_SECRET'),
    secret: 'a-long-random-secret-for-the-load-benchmark-only-0123456789',
    authRequired: false,
    idpLogout: false,
    authorizationParams: { response_type: 'code', scope: 'openid offline_access' },
    routes: { login: '/bff/login', callback: '/bff/callback', logout: '/bff/logout' },
  }));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });
  app.use('/api', requiresAuth(), async (req, res, next) => {
    try {
      let token = req.oidc.accessToken;
      if (token.isExpired()) token = await token.refresh();
      req.headers.authorization = `Bearer ${token.access_token}`;
      next();
    } catch (e) {
      next(e);
    }
  }, createProxyMiddleware({ target: `${env('UPSTREAM')}/api`, agent, changeOrigin: true }));
  app.listen(port, '127.0.0.1');
}
