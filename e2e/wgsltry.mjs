import { goTestInBrowser } from '/work/main/e2e/lib.mjs';
const { code, out } = await goTestInBrowser('./wgsl', ['-test.v', '-test.run', process.argv[2]]);
console.log(out);
