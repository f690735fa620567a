/**
 * js/ is an installable npm package: publishable metadata, exports that
 * resolve (Node resolves a package's own name through its "exports"), and
 * a tarball holding the modules, their declarations and the README only.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { promisify } from "node:util";

const JS_DIR = fileURLToPath(new URL("..", import.meta.url));
const pkg = JSON.parse(readFileSync(JS_DIR + "package.json", "utf8"));
const MODULES = readdirSync(JS_DIR).filter((name) => name.endsWith(".js")).sort();

describe("the npm package", function () {
    test("is publishable: name, version, exports, types, files, not private", function () {
        assert.equal(pkg.private, undefined);
        assert.equal(pkg.name, "trioroom");
        assert.match(pkg.version, /^\d+\.\d+\.\d+/);
        assert.equal(pkg.type, "module");
        assert.equal(pkg.types, "./trioroom.d.ts");
        assert.deepEqual(pkg.exports["."], { types: "./trioroom.d.ts", default: "./trioroom.js" });
        for (const [subpath, target] of Object.entries(pkg.exports)) {
            const files = typeof target === "string" ? [target] : [target.types, target.default];
            files.forEach((file) => assert.ok(existsSync(JS_DIR + file), subpath + ": " + file));
        }
        assert.deepEqual(Object.keys(pkg.dependencies || {}), [], "no runtime dependency");
    });

    test("its name and subpaths resolve to the modules", async function () {
        assert.equal((await import("trioroom")).trioroom, (await import("../trioroom.js")).trioroom);
        for (const name of ["codec", "utf8", "emitter", "backoff"]) {
            assert.equal(await import("trioroom/" + name), await import("../" + name + ".js"), name);
        }
    });

    test("the tarball holds every module with its .d.ts and the README, and no tests", { timeout: 60000 }, async function () {
        const npm = process.platform === "win32" ? "npm.cmd" : "npm";
        const { stdout } = await promisify(execFile)(npm, ["pack", "--dry-run", "--json", "--ignore-scripts"], { cwd: JS_DIR });
        const files = JSON.parse(stdout)[0].files.map((file) => file.path).sort();
        const expected = MODULES.flatMap((name) => [name, name.replace(/\.js$/, ".d.ts")])
            .concat(["README.md", "package.json"])
            .sort();
        assert.deepEqual(files, expected);
    });
});
