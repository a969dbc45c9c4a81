// Local OpenID Connect provider for berth-user integration tests.
//
//   node tests/support/oidc/start.mjs            # random port
//   OIDC_PORT=9400 OIDC_EMAIL=a@b.test node tests/support/oidc/start.mjs
//
// Prints `OIDC_ISSUER=<url>` once listening. /authorize redirects straight
// back to the client (auto-login); PKCE (S256) and the nonce are honoured.
// Every token gets `email` (OIDC_EMAIL) and `email_verified` (OIDC_EMAIL_VERIFIED,
// default true) so account linking by verified email can be exercised.
import { OAuth2Server } from 'oauth2-mock-server';

const port = Number(process.env.OIDC_PORT ?? 0);
const email = process.env.OIDC_EMAIL ?? 'oidc-user@example.test';
const verified = (process.env.OIDC_EMAIL_VERIFIED ?? 'true') === 'true';

const server = new OAuth2Server();
await server.issuer.keys.generate('RS256');
server.service.on('beforeTokenSigning', (token) => {
  token.payload.email = email;
  token.payload.email_verified = verified;
});
await server.start(port, '127.0.0.1');
server.issuer.url = `http://127.0.0.1:${server.address().port}`;
console.log(`OIDC_ISSUER=${server.issuer.url}`);

const stop = async () => {
  await server.stop();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
