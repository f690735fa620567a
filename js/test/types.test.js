/**
 * The TypeScript declarations: they compile with a typical use (and reject
 * misuse), and each module's .d.ts declares exactly what the module exports.
 */

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { promisify } from "node:util";

const require = createRequire(import.meta.url);
const ts = require("typescript");
const JS_DIR = fileURLToPath(new URL("..", import.meta.url));
const MODULES = readdirSync(JS_DIR).filter((name) => name.endsWith(".js")).sort();

describe("TypeScript declarations", function () {
    test("every module has a .d.ts", function () {
        assert.deepEqual(MODULES, ["backoff.js", "codec.js", "emitter.js", "trioroom.js", "utf8.js"]);
        const declarations = readdirSync(JS_DIR).filter((name) => name.endsWith(".d.ts")).sort();
        assert.deepEqual(declarations, MODULES.map((name) => name.replace(/\.js$/, ".d.ts")));
    });

    test("each .d.ts declares exactly the module's runtime exports", async function () {
        const files = MODULES.map((name) => JS_DIR + name.replace(/\.js$/, ".d.ts"));
        const program = ts.createProgram(files, { strict: true, noEmit: true, moduleResolution: ts.ModuleResolutionKind.Bundler, module: ts.ModuleKind.ESNext });
        const checker = program.getTypeChecker();
        for (const [index, name] of MODULES.entries()) {
            const source = program.getSourceFile(files[index]);
            const symbol = checker.getSymbolAtLocation(source);
            const declared = checker
                .getExportsOfModule(symbol)
                // Type-only exports have no runtime value.
                .filter((exported) => {
                    const target = exported.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exported) : exported;
                    return (target.flags & ts.SymbolFlags.Value) !== 0;
                })
                .map((exported) => exported.getName())
                .sort();
            const runtime = Object.keys(await import(new URL("../" + name, import.meta.url))).sort();
            assert.deepEqual(declared, runtime, name);
        }
    });

    test("a typical program type-checks against them, and misuse does not", { timeout: 120000 }, async function () {
        const tsc = require.resolve("typescript/bin/tsc");
        try {
            await promisify(execFile)(process.execPath, [tsc, "-p", "test/types/tsconfig.json"], { cwd: JS_DIR });
        } catch (error) {
            assert.fail("tsc failed:\n" + error.stdout + error.stderr);
        }
    });
});
