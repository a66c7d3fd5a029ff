// Lint for the web pages' modules (web/app) and the Node test scripts (tests/*.js):
// `make lint` runs it from the repository root with `-c tests/eslint.config.js`.
const js = require('@eslint/js');
const globals = require('globals');

module.exports = [
  js.configs.recommended,
  {
    files: ['web/app/**/*.js'],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: 'module',
      globals: { ...globals.browser, maplibregl: 'readonly' },
    },
  },
  {
    files: ['tests/*.js'],
    // Functions passed to page.evaluate run in the browser: its globals are legitimate.
    languageOptions: { ecmaVersion: 2022, sourceType: 'commonjs', globals: { ...globals.node, ...globals.browser } },
  },
];
