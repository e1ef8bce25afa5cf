// Lint rules for shardface: @eslint/js and typescript-eslint "recommended, type-checked",
// with the few rules that flag the project's deliberate patterns configured (reasons inline).
// `npm run lint` runs it; `npm test` runs it before the type check and the tests.
import { fileURLToPath } from 'node:url';
import js from '@eslint/js';
import globals from 'globals';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'build/**', 'src/ops/native/build/**', 'runs/**', '.vitest-tmp/**', 'docs/**', '.prof.ts'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      globals: globals.node,
      parserOptions: { project: ['./tsconfig.test.json'], tsconfigRootDir: fileURLToPath(new URL('.', import.meta.url)) },
    },
    rules: {
      // `_name` marks a deliberately unused binding (destructured-away options, interface-shaped parameters).
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_', destructuredArrayIgnorePattern: '^_' }],
      // Error messages print shapes, counts and flags: arrays, numbers and booleans in templates are intended.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true, allowArray: true, allowNullish: true }],
      // `xs[i]!` is the project's way to say "in range by construction" (it keeps code ready for
      // noUncheckedIndexedAccess); with that compiler option off, this rule would strip every one of them.
      '@typescript-eslint/no-unnecessary-type-assertion': 'off',
      // Async functions without await are deliberate: they implement Promise-returning interfaces
      // (Job, Dataset, Transport.close) and turn synchronous throws into rejections.
      '@typescript-eslint/require-await': 'off',
    },
  },
  {
    // The N-API addon's functions are plain C++ callbacks that never use `this`.
    files: ['src/ops/native/**/*.ts'],
    rules: { '@typescript-eslint/unbound-method': 'off' },
  },
  {
    // Tests read the CLI's JSON output (JSON.parse → any) and assert on its fields.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unsafe-assignment': 'off',
      '@typescript-eslint/no-unsafe-member-access': 'off',
      '@typescript-eslint/no-unsafe-return': 'off',
      '@typescript-eslint/no-unsafe-argument': 'off',
      '@typescript-eslint/no-unsafe-call': 'off',
    },
  },
  { files: ['**/*.js', '**/*.mjs', '**/*.cjs'], ...tseslint.configs.disableTypeChecked },
  // CommonJS scripts (the image's install check runs before any build): require() is how they import.
  { files: ['**/*.cjs'], languageOptions: { sourceType: 'commonjs' }, rules: { '@typescript-eslint/no-require-imports': 'off' } },
);
