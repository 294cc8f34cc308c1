# Checks the Vagrantfile without Vagrant (which cannot run here): loads it with a stand-in for
# Vagrant's configuration DSL that records every setting, then asserts the seeds' lab.
# Usage: ruby vagrant/test_vagrantfile.rb   (exit 0 when every check passes)

# Records `x.a = v`, `x.f(args) { ... }` and nested `x.vm.network ...` calls; `define` and
# `trigger.after` blocks run against a fresh recorder, `t.ruby` blocks are kept, not run.
class Recorder
  attr_reader :settings, :calls, :children

  def initialize
    @settings = {}
    @calls = []
    @children = Hash.new { |h, k| h[k] = Recorder.new }
  end

  def define(name, **opts)
    node = Recorder.new
    @calls << [:define, name, opts, node]
    yield node if block_given?
  end

  def method_missing(name, *args, **kw, &blk)
    key = name.to_s
    if key.end_with?("=")
      @settings[key.chomp("=")] = args.first
    elsif args.empty? && kw.empty? && blk.nil?
      @children[key]
    else
      child = Recorder.new
      @calls << [name, args, kw, child]
      blk.call(child) if blk && name != :ruby
      child
    end
  end

  def respond_to_missing?(*) = true

  def find(name) = @calls.select { |c| c[0] == name }
end

module Vagrant
  @config = Recorder.new
  class << self
    attr_reader :config

    def configure(version)
      raise "Vagrant.configure(#{version.inspect}): expected \"2\"" unless version == "2"
      yield @config
    end
  end
end

failures = []
check = lambda do |what, ok|
  failures << what unless ok
end

path = File.join(__dir__, "Vagrantfile")
load path
config = Vagrant.config
vm = config.children["vm"]
check.call("box is debian/bookworm64", vm.settings["box"] == "debian/bookworm64")
check.call("VAGRANT_NO_PARALLEL is set (smgr first)", ENV["VAGRANT_NO_PARALLEL"] == "yes")
synced = vm.find(:synced_folder).map { |c| c[1] }
check.call("the repository is synced to /shoal", synced.include?(["..", "/shoal"]))

want = { "smgr" => "192.168.33.10", "snode1" => "192.168.33.20", "snode2" => "192.168.33.30" }
defines = vm.find(:define)
check.call("machines are smgr, snode1, snode2 (got #{defines.map { |d| d[1] }})", defines.map { |d| d[1] } == want.keys)
defines.each do |_, name, _opts, node|
  nvm = node.children["vm"]
  check.call("#{name}: hostname", nvm.settings["hostname"] == name)
  net = nvm.find(:network).first
  check.call("#{name}: private network at #{want[name]}", net && net[1] == ["private_network"] && net[2][:ip] == want[name])
  prov = nvm.find(:provision).first
  check.call("#{name}: provisioned by provision.sh", prov && prov[2][:path] == "provision.sh" && File.exist?(File.join(__dir__, "provision.sh")))
  args = prov ? prov[2][:args] : []
  expected = name == "smgr" ? ["manager", want[name]] : ["worker", want[name], want["smgr"], "/shoal/vagrant/.tokens/worker"]
  check.call("#{name}: provision args #{expected} (got #{args})", args == expected)
  triggers = node.children["trigger"].find(:after)
  check.call("#{name}: #{name == 'smgr' ? 'a' : 'no'} trigger saving the join token", (name == "smgr") == !triggers.empty?)
end

if failures.empty?
  puts "vagrant: Vagrantfile defines smgr, snode1, snode2 at 192.168.33.10/20/30, provisioned by provision.sh"
  exit 0
end
failures.each { |f| warn "vagrant: FAILED: #{f}" }
exit 1
