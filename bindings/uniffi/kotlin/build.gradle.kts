// Gradle build of the Kotlin/Java bindings, for Gradle and Android users.
//
// NOT run in this repository: Maven (pom.xml) is the build that CI runs and tests. This file
// mirrors it step for step (cargo build -> uniffi-bindgen -> native library into the classes
// under JNA's platform folder -> compile -> JUnit 5), but nothing checks that it still works.
// It needs a settings.gradle.kts beside it (`rootProject.name = "tether"`) and Gradle 8.5+.
//
// Android: use the `com.android.library` plugin instead of `kotlin("jvm")`, depend on
// "net.java.dev.jna:jna:5.19.1@aar" instead of the jar, build the library for each ABI with
// cargo-ndk into src/main/jniLibs/<abi>/libtether_uniffi.so, and set `android = true` under
// [bindings.kotlin] in ../uniffi.toml (it switches the generated code to Android's cleaner).

plugins {
    kotlin("jvm") version "2.4.21"
    `java-library`
}

group = "io.tether"
version = "0.1.0"

repositories {
    mavenCentral()
}

dependencies {
    api("net.java.dev.jna:jna:5.19.1")
    testImplementation(platform("org.junit:junit-bom:5.14.4"))
    testImplementation("org.junit.jupiter:junit-jupiter")
    testRuntimeOnly("org.junit.platform:junit-platform-launcher")
}

kotlin {
    compilerOptions {
        jvmTarget.set(org.jetbrains.kotlin.gradle.dsl.JvmTarget.JVM_11)
        allWarningsAsErrors.set(true)
    }
}
java {
    sourceCompatibility = JavaVersion.VERSION_11
    targetCompatibility = JavaVersion.VERSION_11
}

val workspace: File = projectDir.resolve("../../..").canonicalFile
val cargoLibDir: File = workspace.resolve("target/debug")
val jnaPlatform = "linux-x86-64" // darwin-aarch64 with libtether_uniffi.dylib on Apple silicon
val nativeLibrary = "libtether_uniffi.so"

val cargoBuild by tasks.registering(Exec::class) {
    description = "Builds the native library and the in-workspace uniffi-bindgen."
    workingDir = workspace
    commandLine("cargo", "build", "-p", "tether-uniffi", "-p", "tether-uniffi-bindgen")
}

val cargoBuildTestServers by tasks.registering(Exec::class) {
    description = "Builds the server and the fault proxy the end-to-end tests run."
    workingDir = workspace
    commandLine("cargo", "build", "-p", "tether-server", "-p", "tether-testkit")
}

val generatedKotlin = layout.buildDirectory.dir("generated/source/uniffi")

val uniffiBindgen by tasks.registering(Exec::class) {
    description = "Generates the Kotlin bindings from the native library."
    dependsOn(cargoBuild)
    workingDir = workspace
    outputs.dir(generatedKotlin)
    commandLine(
        cargoLibDir.resolve("uniffi-bindgen").path, "generate",
        "--library", cargoLibDir.resolve(nativeLibrary).path,
        "--language", "kotlin", "--no-format",
        "--out-dir", generatedKotlin.get().asFile.path,
    )
}

val nativeResources = layout.buildDirectory.dir("generated/resources/native")

val copyNativeLibrary by tasks.registering(Copy::class) {
    description = "Puts the native library where JNA looks for it in the class path."
    dependsOn(cargoBuild)
    from(cargoLibDir) { include(nativeLibrary) }
    into(nativeResources.map { it.dir(jnaPlatform) })
}

sourceSets {
    main {
        kotlin.srcDir(uniffiBindgen)
        resources.srcDir(nativeResources)
    }
    test {
        // The Kotlin example is compiled (and run by a test) with the tests.
        kotlin.srcDir(workspace.resolve("examples/kotlin"))
    }
}

tasks.processResources { dependsOn(copyNativeLibrary) }

tasks.test {
    dependsOn(cargoBuildTestServers)
    useJUnitPlatform()
    systemProperty("tether.bin", cargoLibDir.path)
    systemProperty("tether.examples", workspace.resolve("examples").path)
    systemProperty("tether.work", layout.buildDirectory.dir("test-work").get().asFile.path)
}
