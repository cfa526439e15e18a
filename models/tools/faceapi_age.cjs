// Run face-api's own AgeGenderNet (TensorFlow.js, CPU backend) on raw 112x112x3 uint8 RGB
// crops and print {"ages": [...]} as JSON. Used by make_age_golden.py; see there for set-up.
//
//   node faceapi_age.cjs PACKAGE_DIR CROP.raw...
//
// PACKAGE_DIR is the unpacked npm tarball of @vladmandic/face-api (its `package/` folder);
// @tensorflow/tfjs and @tensorflow/tfjs-backend-wasm must be resolvable (NODE_PATH).
const fs = require('fs');
const path = require('path');
const tf = require('@tensorflow/tfjs');

(async () => {
  const [pkg, ...crops] = process.argv.slice(2);
  // face-api's Node build for pure-JS TensorFlow (it also registers the wasm backend).
  const faceapi = require(path.resolve(pkg, 'dist/face-api.node-wasm.js'));
  await tf.setBackend('cpu');
  await tf.ready();
  const dir = path.join(pkg, 'model');
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'age_gender_model-weights_manifest.json')));
  const shard = fs.readFileSync(path.join(dir, 'age_gender_model.bin'));
  const weights = tf.io.decodeWeights(
    shard.buffer.slice(shard.byteOffset, shard.byteOffset + shard.length), manifest[0].weights);
  await faceapi.nets.ageGenderNet.loadFromWeightMap(weights);
  const ages = [];
  for (const f of crops) {
    const px = new Int32Array(new Uint8Array(fs.readFileSync(f)));
    if (px.length !== 112 * 112 * 3) throw new Error(`${f}: ${px.length} bytes, want 112x112x3`);
    const r = await faceapi.nets.ageGenderNet.predictAgeAndGender(tf.tensor3d(px, [112, 112, 3], 'int32'));
    ages.push(r.age);
  }
  console.log(JSON.stringify({ tfjs: tf.version_core, backend: tf.getBackend(), ages }));
})();
