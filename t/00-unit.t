#!/usr/bin/perl

# The unit tests of the core are C programs that speak TAP: this file
# runs build/t/core, and a link to it named NN-unit-NAME.t runs
# build/t/NAME.

use strict;
use warnings;
use FindBin;

my ($name) = $FindBin::Script =~ /-unit-(\w+)\.t$/;
my $bin = ($ENV{LLMR_BUILD} // "$FindBin::Bin/../build") . '/t/'
          . ($name // 'core');

unless (-x $bin) {
    print "Bail out! $bin is not built: run make unit\n";
    exit 1;
}

exec $bin or die "cannot run $bin: $!\n";
