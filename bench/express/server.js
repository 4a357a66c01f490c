// The comparison stack of capsign's benchmark: an Express server minting an Ably JWT with
// jsonwebtoken, as in Ably's JWT authentication tutorial. It checks nothing and keeps no
// grants; it is the cost floor of the usual Node approach, not a capsign equivalent.
//
// ABLY_API_KEY=app.key:secret PORT=0 node server.js   (prints "express: listening on http://ADDR")
'use strict';
const express = require('express');
const jwt = require('jsonwebtoken');

const [keyName, keySecret] = (process.env.ABLY_API_KEY || '').split(':');
if (!keyName || !keySecret) {
  console.error('express: set ABLY_API_KEY=appId.keyId:secret');
  process.exit(2);
}
const app = express();

app.get('/auth', (req, res) => {
  const header = { typ: 'JWT', alg: 'HS256', kid: keyName };
  const currentTime = Math.round(Date.now() / 1000);
  const claims = {
    iat: currentTime,
    exp: currentTime + 3600,
    'x-ably-capability': req.query.capability || '{"*":["*"]}',
  };
  const token = jwt.sign(claims, keySecret, { header, noTimestamp: true });
  res.type('application/jwt').send(token);
});

const server = app.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  const a = server.address();
  console.error(`express: listening on http://${a.address}:${a.port}`);
});
