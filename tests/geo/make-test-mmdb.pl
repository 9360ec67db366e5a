#!/usr/bin/perl
# make-test-mmdb.pl - builds moat's own tiny country database for tests.
#
# Usage: perl make-test-mmdb.pl [--ip-version 4|6] OUT.mmdb [DATABASE_TYPE]
#
# The data is invented and covers only documentation and shared-address
# ranges, so no test ever depends on where a real address is. It differs
# on purpose from ../shared/testdata/geo/test-country.mmdb:
#   - no ::ffff:0:0/96 alias (alias_ipv6_to_ipv4 off), so looking up an
#     IPv4-mapped client finds nothing unless the reader maps it to IPv4
#     itself, which is what geo_lookup must do;
#   - a record with a continent but no country, and one split /24.
# DATABASE_TYPE defaults to "Moat-Test-Country"; the unit test also builds
# one named "Moat-Test-ASN" to check that geo_open refuses it.
# --ip-version 4 writes an IPv4-only database (metadata ip_version 4,
# the IPv6 rows left out), in which libmaxminddb can look up no IPv6
# address at all: moat warns about such a database. The default is 6.
#
# Needs Debian's libmaxmind-db-writer-perl. The output is reproducible:
# build_epoch is SOURCE_DATE_EPOCH, or 2026-01-01 when that is unset.
use strict;
use warnings;

use Getopt::Long;
use MaxMind::DB::Writer::Tree;

my $usage = "usage: $0 [--ip-version 4|6] OUT.mmdb [DATABASE_TYPE]\n";
my $ip_version = 6;
GetOptions('ip-version=i' => \$ip_version) or die $usage;
die $usage unless $ip_version == 4 || $ip_version == 6;
my ($out, $type) = @ARGV;
die $usage unless defined $out;
$type //= 'Moat-Test-Country';

my %key_type = (
    continent  => 'map',
    country    => 'map',
    names      => 'map',
    code       => 'utf8_string',
    iso_code   => 'utf8_string',
    en         => 'utf8_string',
    geoname_id => 'uint32',
);

# Continents with made-up ids (the ids are not what moat reads).
my %continent = (
    EU => [ 1, 'Europe' ],
    AS => [ 2, 'Asia' ],
    SA => [ 3, 'South America' ],
    NA => [ 4, 'North America' ],
    OC => [ 5, 'Oceania' ],
);

sub place {
    my ($cc, $name, $cont) = @_;
    my ($cid, $cname) = @{ $continent{$cont} };
    my %r = (
        continent => { code => $cont, geoname_id => $cid,
                       names => { en => $cname } },
    );
    $r{country} = { iso_code => $cc, names => { en => $name } }
        if defined $cc;
    return \%r;
}

# network => record; the expectations live in tests/unit/test_geo.c.
my @data = (
    [ '192.0.2.0/25',    place('NL', 'Netherlands', 'EU') ],
    [ '192.0.2.128/25',  place('JP', 'Japan', 'AS') ],
    [ '198.51.100.0/24', place('BR', 'Brazil', 'SA') ],
    [ '203.0.113.0/24',  place(undef, undef, 'OC') ],    # continent only
    [ '100.64.0.0/10',   place('IN', 'India', 'AS') ],
    [ '2001:db8:a::/48', place('CA', 'Canada', 'NA') ],
    [ '2001:db8:b::/48', place('AU', 'Australia', 'OC') ],
);

my $tree = MaxMind::DB::Writer::Tree->new(
    ip_version               => $ip_version,
    record_size              => 24,
    database_type            => $type,
    languages                => ['en'],
    description              => { en => 'moat unit-test database (invented data)' },
    map_key_type_callback    => sub { $key_type{ $_[0] } },
    remove_reserved_networks => 0,
    alias_ipv6_to_ipv4       => 0,
);
$tree->_set_build_epoch($ENV{SOURCE_DATE_EPOCH} // 1767225600)
    if $tree->can('_set_build_epoch');

# An IPv4 tree has no room for IPv6 networks.
@data = grep { $_->[0] !~ /:/ } @data if $ip_version == 4;
$tree->insert_network($_->[0], $_->[1]) for @data;

my $tmp = "$out.tmp$$";
open my $fh, '>:raw', $tmp or die "$tmp: $!\n";
$tree->write_tree($fh);
close $fh or die "$tmp: $!\n";
rename $tmp, $out or die "$out: $!\n";
